// linux_memory: the Linux machine's side of the memory-error contract (include/hugetlb_ras.h): a
// SIGBUS, an EFAULT from KVM_RUN or an MMIO exit inside guest RAM is a question to the engine; a
// LOST frame the access named becomes an AR machine check on that vCPU, on the instruction that
// touched it; a frame only next_lost() names an AO, once per VM (mce_delivery.h).
#include <errno.h>
#include <string.h>
#include <sys/ioctl.h>

#include "linux_vm.h"
#include "mce.h"

namespace ras_vmm {

bool LinuxMachine::Check(int i, int path, bool by_hva, uint64_t addr, hugetlb_ras_status* st) {
  LinuxStats& s = stats_;
  uint64_t t0 = NowNs();
  int rc = AskEngine(cfg_.api, cfg_.wait_ms, by_hva, addr, st, &s.recovering, &quit_);
  if (rc == -ECANCELED) return false;
  if (rc == -ETIMEDOUT) {
    Event e{kEvStall, i, {static_cast<uint64_t>(path), addr, NowNs() - t0, HUGETLB_RAS_RECOVERING, by_hva ? 1u : 0u, 0, 0, 0}, {}};
    Post(std::move(e));
    return false;  // re-enter: the access re-faults and asks again
  }
  if (rc != 0) {
    Fatal(i, kLxError, "check_" + std::string(by_hva ? "hva" : "gpa") + " failed: " + std::to_string(rc));
    return false;
  }
  CountAnswer(&s, st->state);
  if (st->state != HUGETLB_RAS_LOST) {
    Event e{kEvStall, i, {static_cast<uint64_t>(path), addr, NowNs() - t0, st->state, by_hva ? 1u : 0u, 0, 0, 0}, {}};
    Post(std::move(e));
  }
  return true;
}

void LinuxMachine::Lost(int i, uint64_t gpa, bool ar, int path, int code, int whole) {
  gpa &= ~0xfffull;
  {
    std::lock_guard<std::mutex> lock(lost_mu_);
    if (!injected_frames_.insert(gpa).second && ar) stats_.duplicate++;
  }
  mce_.Deliver(i, vcpus_[i].fd, gpa, ar, path, code, whole);
}

void LinuxMachine::Outcome(int i, const ras_vmm::Outcome& o) {
  LinuxStats& s = stats_;
  const mce::Decision& d = o.d;
  CountOutcome(s, o);
  uint64_t flags = OutcomeFlags(o);
  Event e{kEvInjected, i, {o.gpa, static_cast<uint64_t>(o.path), d.inj.status, d.inj.mcg_status, d.inj.misc, flags,
                           static_cast<uint64_t>(o.code), static_cast<uint64_t>(o.err)},
          OutcomeKind(o)};
  Post(std::move(e));
  if (d.verdict == mce::kDisabled && o.ar)
    Fatal(i, kLxError, "the guest turned uncorrected machine-check reporting off: a lost frame it touched cannot be reported");
}

void LinuxMachine::OnSigbus(int i, uint64_t hva) {
  if (!cfg_.api) return Fatal(i, kLxError, "SIGBUS on a vCPU and no engine API to ask");
  hugetlb_ras_status st;
  if (!Check(i, kPathSigbus, true, hva, &st)) return;
  if (st.state == HUGETLB_RAS_LOST) Lost(i, st.gpa, true, kPathSigbus, st.code ? st.code : 4, static_cast<int>(st.whole_huge_page));
  else if (st.state == HUGETLB_RAS_NOT_RAM) Fatal(i, kLxError, "SIGBUS outside guest RAM (QEMU would abort)");
}

bool LinuxMachine::OnEfault(int i) {
  if (!cfg_.api) {
    Fatal(i, kLxError, "KVM_RUN failed with EFAULT and there is no engine API to ask");
    return true;
  }
  kvm_run* run = vcpus_[i].run;
  if (run->exit_reason == KVM_EXIT_MEMORY_FAULT) {  // zeroed before KVM_RUN: never a stale one
    hugetlb_ras_status st;
    if (!Check(i, kPathMemoryFault, false, MemoryFaultGpa(run), &st)) return true;
    if (st.state == HUGETLB_RAS_LOST) {
      Lost(i, st.gpa, true, kPathMemoryFault, st.code ? st.code : 4, static_cast<int>(st.whole_huge_page));
      return true;
    }
    if (st.state == HUGETLB_RAS_HEALTHY) return true;
  }
  // No address: the frames the engine lost that this vCPU has not seen (its own cursor). Not
  // tied to this access: action optional, once per VM (the guest unmaps them; an access from
  // user space then faults in the guest and gets its SIGBUS there).
  hugetlb_ras_lost buf[16];
  bool told = false;
  int n;
  while ((n = cfg_.api->next_lost(mce_.Cursor(i), buf, 16)) > 0) {
    for (int k = 0; k < n; k++) {
      if (buf[k].size > 4096) continue;
      uint64_t gpa = buf[k].gpa & ~0xfffull;
      if (!mce_.FirstAo(gpa)) continue;
      Lost(i, gpa, false, kPathNextLost, buf[k].code ? buf[k].code : 5, 0);
      told = true;
    }
  }
  return told;
}

void LinuxMachine::OnMmio(int i) {
  LinuxStats& s = stats_;
  kvm_run* run = vcpus_[i].run;
  auto& mmio = run->mmio;
  uint32_t len = mmio.len > 8 ? 8 : mmio.len;
  const Slot* slot = SlotOf(vm_, mmio.phys_addr, len);
  if (!slot) {
    s.mmio_outside++;
    if (!mmio.is_write) memset(mmio.data, 0xff, len);
    return;
  }
  s.mmio_in_ram++;
  if (!cfg_.api) return Fatal(i, kLxError, "MMIO exit inside guest RAM and no engine API to ask");
  hugetlb_ras_status st;
  uint64_t gpa = mmio.phys_addr;
  bool write = mmio.is_write;
  if (!Check(i, kPathMmio, false, gpa, &st)) {
    if (!write) RewindMmioRead(vcpus_[i].fd, run, slot_[i]);
    return;
  }
  uint8_t* hva = slot->hva + (gpa - slot->gpa);
  switch (st.state) {
    case HUGETLB_RAS_HEALTHY:
    {
      // Through the engine's guarded copy where it has one: a frame lost since the answer is a bit
      // (then the LOST path below), not a fault; else directly (sigbus.h ends the VMM cleanly).
      int rc = GuestCopy(cfg_.api, gpa, mmio.data, len, write, cfg_.wait_ms);
      if (rc == -ENOSYS) {
        if (write) memcpy(hva, mmio.data, len);
        else memcpy(mmio.data, hva, len);
        return;
      }
      if (rc == 0) return;
      if (rc < 0) return Fatal(i, kLxError, "copy of an MMIO access to guest RAM failed: " + std::to_string(rc));
      st.state = HUGETLB_RAS_LOST;
      st.gpa = gpa & ~0xfffull;
    }
      [[fallthrough]];
    case HUGETLB_RAS_LOST:
      if (write) {
        // RIP is already past the store: dropped, and the guest told by an AO, once.
        if (mce_.FirstAo(st.gpa)) Lost(i, st.gpa, false, kPathMmio, 5, static_cast<int>(st.whole_huge_page));
        return;
      }
      // A guest process that maps a fresh page over the lost one and returns from its SIGBUS
      // handler must not go on with made-up bytes: complete without entering the guest, put the
      // registers back, then the AR on the instruction that touched the frame.
      if (RewindMmioRead(vcpus_[i].fd, run, slot_[i])) s.mmio_rewound++;
      Lost(i, st.gpa, true, kPathMmio, st.code ? st.code : 4, static_cast<int>(st.whole_huge_page));
      return;
    default:
      Fatal(i, kLxError, "MMIO exit inside guest RAM that the engine calls not-RAM");
      return;
  }
}

}  // namespace ras_vmm
