// ram_exit: the exits that name a guest-RAM address, shared by the bare-metal and the Linux machines.
#include "ram_exit.h"

#include <errno.h>
#include <string.h>

namespace ras_vmm {

void OnMmioExit(const MmioExit& x, const hugetlb_ras_api* api, int wait_ms, Delivery* mce) {
  auto& mmio = x.run->mmio;
  uint32_t len = mmio.len > 8 ? 8 : mmio.len;
  const Slot* slot = SlotOf(*x.vm, mmio.phys_addr, len);
  if (!slot) {
    (*x.outside)++;  // no device here: reads see all ones
    if (!mmio.is_write) memset(mmio.data, 0xff, len);
    return;
  }
  (*x.in_ram)++;
  if (!api) return x.owner->Fatal(x.i, x.fatal_state, "MMIO exit inside guest RAM and no engine API to ask");
  hugetlb_ras_status st;
  uint64_t gpa = mmio.phys_addr;
  bool write = mmio.is_write;
  if (!x.owner->Check(x.i, kPathMmio, false, gpa, &st)) {
    // No answer (stop, or still recovering): KVM retires the access at the next KVM_RUN; a read
    // is put back so that it re-executes and asks again.
    if (!write) RewindMmioRead(x.vcpu_fd, x.run, x.sigbus_slot);
    return;
  }
  switch (st.state) {
    case HUGETLB_RAS_HEALTHY: {
      // Readable RAM: KVM cannot retry the access, so complete it with the RAM's own bytes, through
      // the engine's guarded copy where it has one: a frame lost since the answer is a bit (then
      // the LOST path below), not a fault; else directly (sigbus.h ends the VMM cleanly).
      int rc = GuestCopy(api, gpa, mmio.data, len, write, wait_ms);
      if (rc == -ENOSYS) {
        uint8_t* hva = slot->hva + (gpa - slot->gpa);
        if (write) memcpy(hva, mmio.data, len);
        else memcpy(mmio.data, hva, len);
        return;
      }
      if (rc == 0) return;
      if (rc < 0) return x.owner->Fatal(x.i, x.fatal_state, "copy of an MMIO access to guest RAM failed: " + std::to_string(rc));
      st.state = HUGETLB_RAS_LOST;
      st.gpa = gpa & ~0xfffull;
    }
      [[fallthrough]];
    case HUGETLB_RAS_LOST:
      if (write) {
        // KVM already advanced RIP past the store: there is no instruction to fault. The store
        // is dropped (the frame is lost); the guest learns of the frame by an AO, once.
        if (mce->FirstAo(st.gpa)) x.owner->Lost(x.i, st.gpa, false, kPathMmio, 5, static_cast<int>(st.whole_huge_page));
        return;
      }
      // A read (or the read half of a read-modify-write): complete it without entering the guest,
      // put the registers back, then the AR, taken on the instruction that touched the frame (EIPV
      // right), which re-executes after the guest's handler. Nothing of it retires.
      if (RewindMmioRead(x.vcpu_fd, x.run, x.sigbus_slot)) (*x.rewound)++;
      x.owner->Lost(x.i, st.gpa, true, kPathMmio, st.code ? st.code : 4, static_cast<int>(st.whole_huge_page));
      return;
    default:
      return x.owner->Fatal(x.i, x.fatal_state, "MMIO exit inside guest RAM that the engine calls not-RAM");
  }
}

bool SettleMemoryFault(GuestMemoryOwner* owner, int i, kvm_run* run) {
  if (run->exit_reason != KVM_EXIT_MEMORY_FAULT) return false;  // zeroed before KVM_RUN: never a stale one
  hugetlb_ras_status st;
  if (!owner->Check(i, kPathMemoryFault, false, MemoryFaultGpa(run), &st)) return true;
  if (st.state == HUGETLB_RAS_LOST) {
    owner->Lost(i, st.gpa, true, kPathMemoryFault, st.code ? st.code : 4, static_cast<int>(st.whole_huge_page));
    return true;
  }
  return st.state == HUGETLB_RAS_HEALTHY;
}

}  // namespace ras_vmm
