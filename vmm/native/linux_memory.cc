// linux_memory: the Linux machine's side of the memory-error contract (include/hugetlb_ras.h): a
// SIGBUS, an EFAULT from KVM_RUN or an MMIO exit inside guest RAM is a question to the engine; a
// LOST frame the access named becomes an AR machine check on that vCPU, on the instruction that
// touched it; a frame only next_lost() names an AO, once per VM (mce_delivery.h).
#include <errno.h>
#include <string.h>
#include <sys/ioctl.h>

#include "linux_vm.h"
#include "mce.h"
#include "ram_exit.h"

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
  if (SettleMemoryFault(this, i, vcpus_[i].run)) return true;
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
  // A guest process that maps a fresh page over the lost one and returns from its SIGBUS handler
  // must not go on with made-up bytes: a read of a lost frame is rewound before its AR (ram_exit.h).
  OnMmioExit(MmioExit(this, i, kLxError, vm_, vcpus_[i], slot_[i], stats_), cfg_.api, cfg_.wait_ms, &mce_);
}

}  // namespace ras_vmm
