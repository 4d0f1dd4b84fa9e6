// migration_addon: the JavaScript face of a bare-metal Machine's migration (Vm.pause, saveState,
// restoreState, dirtyLog, takeDirty in addon.cc call these): thin, the KVM work is in vcpu_state
// and dirty_log.
#pragma once

#include <napi.h>

#include "vcpu_loop.h"

namespace ras_vmm::migration {

// After the vCPU threads are joined: completes each vCPU's last exit (state::Complete).
Napi::Value CompleteExits(const Napi::CallbackInfo& info, Machine* m);
// { vcpus: Buffer[], vm: Buffer }: every vCPU's state and the VM's (vcpu_state.h records).
Napi::Value SaveState(const Napi::CallbackInfo& info, Machine* m);
// restoreState({ vcpus, vm }) on a machine created with restore: true, before start():
// returns { msrFailed: number[] } (MSRs this KVM refused; a machine-check MSR among them throws).
Napi::Value RestoreState(const Napi::CallbackInfo& info, Machine* m);
// dirtyLog(on): every slot with or without KVM_MEM_LOG_DIRTY_PAGES.
Napi::Value SetDirtyLog(const Napi::CallbackInfo& info, Machine* m);
// takeDirty(): one Buffer per slot, bit i (little-endian qwords) = page i written since the last call.
Napi::Value TakeDirty(const Napi::CallbackInfo& info, Machine* m);

}  // namespace ras_vmm::migration
