// vcpu_memory: the bare-metal Machine's side of the memory-error contract (include/hugetlb_ras.h):
// a SIGBUS, an EFAULT from KVM_RUN or an MMIO exit inside guest RAM is a question to the engine.
// A LOST frame this vCPU's access named gets an action-required machine check on this vCPU (each
// access its own); a frame only next_lost() names, an action-optional one, once per VM. How they
// reach the vCPUs (AR now, AO when the guest can take it, Intel broadcast or LMCE) is mce_delivery.
#include <errno.h>
#include <string.h>
#include <sys/ioctl.h>

#include "vcpu_loop.h"

namespace ras_vmm {

namespace {

const char* StateName(uint32_t s) {
  switch (s) {
    case HUGETLB_RAS_HEALTHY: return "healthy";
    case HUGETLB_RAS_RECOVERING: return "recovering";
    case HUGETLB_RAS_LOST: return "lost";
    default: return "not-ram";
  }
}

}  // namespace

bool Machine::Check(int i, int path, bool by_hva, uint64_t addr, hugetlb_ras_status* st) {
  VcpuStats& s = *stats_[i];
  uint64_t t0 = NowNs();
  int rc = AskEngine(cfg_.api, cfg_.wait_ms, by_hva, addr, st, &s.recovering, &quit_);
  if (rc == -ECANCELED) return false;  // stop(): the loop ends at its gate
  if (rc == -ETIMEDOUT) {
    // Still recovering after wait_ms: re-enter; the access re-faults and asks again.
    Event e{kEvStall, i, {static_cast<uint64_t>(path), addr, NowNs() - t0, HUGETLB_RAS_RECOVERING, by_hva ? 1u : 0u, 0, 0, 0}, "recovering"};
    Post(std::move(e));
    return false;
  }
  if (rc != 0) {
    Fatal(i, kError, "check_" + std::string(by_hva ? "hva" : "gpa") + " failed: " + std::to_string(rc));
    return false;
  }
  uint64_t ns = NowNs() - t0;
  CountAnswer(&s, st->state);
  if (st->state != HUGETLB_RAS_LOST) {
    // The exit that found the poison to the re-entry: a stall of this vCPU.
    Event e{kEvStall, i, {static_cast<uint64_t>(path), addr, ns, st->state, by_hva ? 1u : 0u, 0, 0, 0}, StateName(st->state)};
    Post(std::move(e));
  }
  return true;
}

void Machine::Lost(int i, uint64_t gpa, bool ar, int path, int code, int whole) {
  gpa &= ~0xfffull;
  if (ar) {
    std::lock_guard<std::mutex> lock(lost_mu_);
    if (!injected_.insert(gpa).second) dup_++;
  }
  if (!whole) Unmap(i, gpa);
  mce_.Deliver(i, vcpus_[i].fd, gpa, ar, path, code, whole);
}

void Machine::Unmap(int i, uint64_t gpa) {
  if (!cfg_.unmap_lost || gpa < RAS_GUEST_SYSTEM_END) return;
  const Slot* s = SlotOf(vm_, gpa);
  if (!s || s->gpa == 0) return;  // the first region holds the guest's code and page tables
  std::string why;
  if (holes_.Punch(&vm_, gpa, &why) != 0) Fatal(i, kError, why);
}

void Machine::Outcome(int i, const ras_vmm::Outcome& o) {
  VcpuStats& s = *stats_[i];
  const mce::Decision& d = o.d;
  CountOutcome(s, o);
  if (d.verdict == mce::kDisabled && o.ar)
    Fatal(i, kFatal, "the guest turned uncorrected machine-check reporting off (MCG_CTL/MCi_CTL): a lost frame it touched cannot be reported");
  // A deferred error (AMD's action-optional) raises no #MC: the guest polls on its interrupt.
  if (!o.ar && !o.piece && d.verdict == mce::kInject && o.err == 0 && (d.inj.status & mce::MCI_STATUS_DEFERRED))
    poll_wanted_[i] = true;
  uint64_t flags = OutcomeFlags(o);
  Event e{kEvInjected, i, {o.gpa, static_cast<uint64_t>(o.path), d.inj.status, d.inj.mcg_status, d.inj.misc, flags,
                           static_cast<uint64_t>(o.code), static_cast<uint64_t>(o.err)},
          OutcomeKind(o)};
  Post(std::move(e));
}

void Machine::OnSigbus(int i, uint64_t hva) {
  if (!cfg_.api) {
    Fatal(i, kError, "SIGBUS on a vCPU and no engine API to ask");
    return;
  }
  hugetlb_ras_status st;
  if (!Check(i, kPathSigbus, true, hva, &st)) return;
  if (st.state == HUGETLB_RAS_LOST) Lost(i, st.gpa, true, kPathSigbus, st.code ? st.code : 4, static_cast<int>(st.whole_huge_page));
  else if (st.state == HUGETLB_RAS_NOT_RAM) Fatal(i, kError, "SIGBUS outside guest RAM (QEMU would abort)");
}

bool Machine::DrainNextLost(int i) {
  hugetlb_ras_lost buf[16];
  bool told = false;
  int n;
  // This vCPU's own cursor: what another vCPU drained is still news here.
  while ((n = cfg_.api->next_lost(mce_.Cursor(i), buf, 16)) > 0) {
    for (int k = 0; k < n; k++) {
      uint64_t gpa = buf[k].gpa & ~0xfffull;
      // A whole huge page (refused): which of its frames was touched is not known here; the
      // check_* paths (SIGBUS, MMIO, memory_fault) name the frame, one machine check each.
      if (buf[k].size > 4096 || !OursHva(buf[k].hva)) continue;
      // Not tied to this access (no address came with it): action optional, once per VM.
      if (!mce_.FirstAo(gpa)) continue;
      {
        std::lock_guard<std::mutex> lock(lost_mu_);
        injected_.insert(gpa);
      }
      Unmap(i, gpa);
      mce_.Deliver(i, vcpus_[i].fd, gpa, false, kPathNextLost, buf[k].code ? buf[k].code : 5, 0);
      told = true;
    }
  }
  return told;
}

void Machine::RaisePoll(int i) {
  kvm_run* run = vcpus_[i].run;
  // Both fields are KVM's answer at the last exit (an EFAULT included): IF set, no event pending.
  if (run->ready_for_interrupt_injection && run->if_flag) {
    kvm_interrupt irq = {RAS_GUEST_POLL_VECTOR};
    if (ioctl(vcpus_[i].fd, KVM_INTERRUPT, &irq) == 0) {
      poll_wanted_[i] = false;
      run->request_interrupt_window = 0;
      stats_[i]->polls_raised++;
      return;
    }
  }
  run->request_interrupt_window = 1;  // KVM_EXIT_IRQ_WINDOW_OPEN when the guest can take it
}

bool Machine::OnEfault(int i) {
  if (!cfg_.api) {
    Fatal(i, kError, "KVM_RUN failed with EFAULT and there is no engine API to ask (QEMU would abort)");
    return true;
  }
  if (SettleMemoryFault(this, i, vcpus_[i].run)) return true;
  return DrainNextLost(i);
}

void Machine::OnMmio(int i) {
  OnMmioExit(MmioExit(this, i, kError, vm_, vcpus_[i], slot_[i], *stats_[i]), cfg_.api, cfg_.wait_ms, &mce_);
}

}  // namespace ras_vmm
