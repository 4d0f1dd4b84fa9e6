// slot_hole: a lost frame out of KVM's memory slots.
#include "slot_hole.h"

#include <errno.h>
#include <string.h>
#include <sys/ioctl.h>

namespace ras_vmm {

namespace {

int SetRegion(int vm_fd, uint32_t id, uint64_t gpa, uint64_t size, uint8_t* hva) {
  kvm_userspace_memory_region m = {};
  m.slot = id;
  m.guest_phys_addr = gpa;
  m.memory_size = size;
  m.userspace_addr = reinterpret_cast<uint64_t>(hva);
  return ioctl(vm_fd, KVM_SET_USER_MEMORY_REGION, &m) == 0 ? 0 : errno;
}

}  // namespace

int SlotHoles::Punch(Vm* vm, uint64_t gpa, std::string* why) {
  std::lock_guard<std::mutex> lock(mu_);
  if (pieces_.empty()) {
    // AddSlot gave slot k the id k.
    for (size_t k = 0; k < vm->slots.size(); k++)
      pieces_.push_back({static_cast<uint32_t>(k), vm->slots[k].gpa, vm->slots[k].size, vm->slots[k].hva});
    next_id_ = static_cast<uint32_t>(vm->slots.size());
  }
  size_t k = 0;
  while (k < pieces_.size() && !(gpa >= pieces_[k].gpa && gpa - pieces_[k].gpa < pieces_[k].size)) k++;
  if (k == pieces_.size()) return 0;  // not in any slot: out already
  Piece p = pieces_[k];
  Piece below = {p.id, p.gpa, gpa - p.gpa, p.hva};
  Piece above = {next_id_, gpa + 4096, p.gpa + p.size - (gpa + 4096), p.hva + (gpa + 4096 - p.gpa)};
  if (int e = SetRegion(vm->fd, p.id, p.gpa, 0, p.hva)) {
    *why = std::string("KVM_SET_USER_MEMORY_REGION (delete): ") + strerror(e);
    return e;
  }
  pieces_.erase(pieces_.begin() + static_cast<long>(k));
  for (const Piece* q : {&below, &above}) {
    if (q->size == 0) continue;
    if (int e = SetRegion(vm->fd, q->id, q->gpa, q->size, q->hva)) {
      // What is not put back is MMIO to KVM: the VMM's own RAM map still answers for it.
      *why = std::string("KVM_SET_USER_MEMORY_REGION (piece): ") + strerror(e);
      return e;
    }
    pieces_.push_back(*q);
    if (q == &above) next_id_++;
  }
  punched_++;
  return 0;
}

}  // namespace ras_vmm
