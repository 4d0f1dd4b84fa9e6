#include "dirty_log.h"

#include <errno.h>
#include <string.h>
#include <sys/ioctl.h>

namespace ras_vmm::dirty {

bool Enable(Vm* vm, bool on) {
  for (size_t i = 0; i < vm->slots.size(); i++) {
    const Slot& s = vm->slots[i];
    kvm_userspace_memory_region m = {};
    m.slot = static_cast<uint32_t>(i);
    m.flags = on ? KVM_MEM_LOG_DIRTY_PAGES : 0;
    m.guest_phys_addr = s.gpa;
    m.memory_size = s.size;
    m.userspace_addr = reinterpret_cast<uint64_t>(s.hva);
    if (ioctl(vm->fd, KVM_SET_USER_MEMORY_REGION, &m) != 0) {
      vm->error = std::string("KVM_SET_USER_MEMORY_REGION (") + (on ? "" : "no ") + "KVM_MEM_LOG_DIRTY_PAGES): " + strerror(errno);
      return false;
    }
  }
  return true;
}

bool Get(Vm* vm, uint32_t slot, std::vector<uint64_t>* bitmap) {
  if (slot >= vm->slots.size()) {
    vm->error = "no such memory slot";
    return false;
  }
  uint64_t pages = vm->slots[slot].size >> 12;
  bitmap->assign((pages + 63) / 64, 0);
  kvm_dirty_log d = {};
  d.slot = slot;
  d.dirty_bitmap = bitmap->data();
  if (ioctl(vm->fd, KVM_GET_DIRTY_LOG, &d) != 0) {
    vm->error = std::string("KVM_GET_DIRTY_LOG: ") + strerror(errno);
    return false;
  }
  return true;
}

}  // namespace ras_vmm::dirty
