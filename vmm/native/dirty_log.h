// dirty_log: KVM's dirty page log for pre-copy migration: every memory slot re-registered with
// KVM_MEM_LOG_DIRTY_PAGES (or without it), and KVM_GET_DIRTY_LOG, which hands over one bit per
// 4 KiB page written since the last call and write-protects those pages again.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "kvm_vm.h"

namespace ras_vmm::dirty {

bool Enable(Vm* vm, bool on);
// The pages of slot `slot` written since Enable or the last Get: bit i = the page at slot gpa + i * 4 KiB.
bool Get(Vm* vm, uint32_t slot, std::vector<uint64_t>* bitmap);

}  // namespace ras_vmm::dirty
