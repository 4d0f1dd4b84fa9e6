// migration_addon: the JavaScript face of a machine's migration (Vm.pause, saveState, restoreState,
// dirtyLog, takeDirty in addon.cc, and the same on LinuxVm in linux_addon.cc call these): thin,
// the KVM work is in vcpu_state and dirty_log. A Target says what a machine has (its vCPUs, an
// in-kernel irqchip and PIT, userspace device state).
#pragma once

#include <napi.h>

#include <functional>
#include <string>
#include <vector>

#include "kvm_vm.h"
#include "vcpu_loop.h"

namespace ras_vmm::migration {

struct Target {
  Vm* vm = nullptr;
  std::vector<const Vcpu*> vcpus;
  bool irqchip = false, pit = false;
  // Userspace device state, appended to the VM's records and read back from them (optional).
  std::function<void(std::vector<uint8_t>*)> save_devices;
  std::function<bool(const uint8_t*, size_t, std::string*)> restore_devices;
};

// The bare-metal machine: no irqchip, no PIT, no device state.
Target Of(Machine* m);

// After the vCPU threads are joined: completes each vCPU's last exit (state::Complete).
Napi::Value CompleteExits(const Napi::CallbackInfo& info, const Target* t);
// { vcpus: Buffer[], vm: Buffer }: every vCPU's state and the VM's (vcpu_state.h records).
Napi::Value SaveState(const Napi::CallbackInfo& info, const Target* t);
// restoreState({ vcpus, vm }) on a machine created with restore: true, before start():
// returns { msrFailed: number[] } (MSRs this KVM refused; a machine-check MSR among them throws).
Napi::Value RestoreState(const Napi::CallbackInfo& info, const Target* t);
// dirtyLog(on): every slot with or without KVM_MEM_LOG_DIRTY_PAGES.
Napi::Value SetDirtyLog(const Napi::CallbackInfo& info, const Target* t);
// takeDirty(): one Buffer per slot, bit i (little-endian qwords) = page i written since the last call.
Napi::Value TakeDirty(const Napi::CallbackInfo& info, const Target* t);

inline Napi::Value CompleteExits(const Napi::CallbackInfo& info, Machine* m) {
  Target t = Of(m);
  return CompleteExits(info, m ? &t : nullptr);
}
inline Napi::Value SaveState(const Napi::CallbackInfo& info, Machine* m) {
  Target t = Of(m);
  return SaveState(info, m ? &t : nullptr);
}
inline Napi::Value RestoreState(const Napi::CallbackInfo& info, Machine* m) {
  Target t = Of(m);
  return RestoreState(info, m ? &t : nullptr);
}
inline Napi::Value SetDirtyLog(const Napi::CallbackInfo& info, Machine* m) {
  Target t = Of(m);
  return SetDirtyLog(info, m ? &t : nullptr);
}
inline Napi::Value TakeDirty(const Napi::CallbackInfo& info, Machine* m) {
  Target t = Of(m);
  return TakeDirty(info, m ? &t : nullptr);
}

}  // namespace ras_vmm::migration
