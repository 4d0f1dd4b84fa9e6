// vcpu_memory: the bare-metal Machine's side of the memory-error contract (include/hugetlb_ras.h):
// a SIGBUS, an EFAULT from KVM_RUN or an MMIO exit inside guest RAM is a question to the engine, a
// LOST frame a machine check (AR) for exactly that 4 KiB, injected now or when the guest has
// finished the previous one.
#include <string.h>

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

hugetlb_ras_status Machine::Check(int i, int path, bool by_hva, uint64_t addr) {
  VcpuStats& s = *stats_[i];
  hugetlb_ras_status st = {};
  uint64_t t0 = NowNs();
  int rc = AskEngine(cfg_.api, cfg_.wait_ms, by_hva, addr, &st, &s.recovering);
  if (rc != 0) {
    Fatal(i, kError, "check_" + std::string(by_hva ? "hva" : "gpa") + " failed: " + std::to_string(rc));
    st.state = HUGETLB_RAS_NOT_RAM;
    return st;
  }
  uint64_t ns = NowNs() - t0;
  CountAnswer(&s, st.state);
  if (st.state != HUGETLB_RAS_LOST) {
    // The exit that found the poison to the re-entry: a stall of this vCPU.
    Event e{kEvStall, i, {static_cast<uint64_t>(path), addr, ns, st.state, by_hva ? 1u : 0u, 0, 0, 0}, StateName(st.state)};
    Post(std::move(e));
  }
  return st;
}

void Machine::Lost(int i, const hugetlb_ras_status& st, int path, std::vector<Pending>* pending, bool now) {
  Pending p{st.gpa & ~0xfffull, path, st.code ? st.code : 4, static_cast<int>(st.whole_huge_page)};
  {
    std::lock_guard<std::mutex> lock(lost_mu_);
    if (!injected_.insert(p.gpa).second) dup_++;
  }
  if (now && !mce::InProgress(vcpus_[i].fd)) {
    InjectNow(i, p);
    return;
  }
  stats_[i]->deferred++;
  pending->push_back(p);
}

bool Machine::InjectNow(int i, const Pending& p) {
  VcpuStats& s = *stats_[i];
  mce::Bits b;
  // The guest touched it (every path here is an access by this vCPU): action required.
  int err = mce::Inject(vcpus_[i].fd, vm_.amd, p.gpa, true, &b);
  if (err) s.inject_failed++;
  else s.injected++;
  Event e{kEvInjected, i, {p.gpa, static_cast<uint64_t>(p.path), b.status, b.mcg_status, b.misc, static_cast<uint64_t>(p.whole),
                           static_cast<uint64_t>(p.code), static_cast<uint64_t>(err)}, {}};
  Post(std::move(e));
  return err == 0;
}

void Machine::OnSigbus(int i, uint64_t hva, std::vector<Pending>* pending) {
  if (!cfg_.api) {
    Fatal(i, kError, "SIGBUS on a vCPU and no engine API to ask");
    return;
  }
  hugetlb_ras_status st = Check(i, kPathSigbus, true, hva);
  if (st.state == HUGETLB_RAS_LOST) Lost(i, st, kPathSigbus, pending, true);
  else if (st.state == HUGETLB_RAS_NOT_RAM) Fatal(i, kError, "SIGBUS outside guest RAM (QEMU would abort)");
}

bool Machine::DrainNextLost(int i, std::vector<Pending>* pending) {
  hugetlb_ras_lost buf[16];
  std::vector<Pending> fresh;
  {
    std::lock_guard<std::mutex> lock(lost_mu_);
    int n;
    while ((n = cfg_.api->next_lost(&lost_cursor_, buf, 16)) > 0) {
      for (int k = 0; k < n; k++) {
        uint64_t gpa = buf[k].gpa & ~0xfffull;
        // A whole huge page (refused): which of its frames this vCPU touched is not known here;
        // the check_* paths (SIGBUS, MMIO, memory_fault) name the frame, one machine check each.
        if (buf[k].size > 4096) continue;
        if (!OursHva(buf[k].hva) || injected_.count(gpa)) continue;
        injected_.insert(gpa);
        fresh.push_back({gpa, kPathNextLost, buf[k].code ? buf[k].code : 4, 0});
      }
    }
  }
  for (const Pending& p : fresh) pending->push_back(p);
  if (!pending->empty() && !mce::InProgress(vcpus_[i].fd)) {
    InjectNow(i, pending->front());
    pending->erase(pending->begin());
  }
  return !fresh.empty();
}

void Machine::OnEfault(int i, std::vector<Pending>* pending) {
  if (!cfg_.api) {
    Fatal(i, kError, "KVM_RUN failed with EFAULT and there is no engine API to ask (QEMU would abort)");
    return;
  }
  kvm_run* run = vcpus_[i].run;
  if (run->exit_reason == KVM_EXIT_MEMORY_FAULT) {
    hugetlb_ras_status st = Check(i, kPathMemoryFault, false, MemoryFaultGpa(run));
    if (st.state == HUGETLB_RAS_LOST) {
      Lost(i, st, kPathMemoryFault, pending, true);
      return;
    }
    if (st.state == HUGETLB_RAS_HEALTHY) return;
  }
  DrainNextLost(i, pending);
}

void Machine::OnMmio(int i, std::vector<Pending>* pending) {
  VcpuStats& s = *stats_[i];
  auto& mmio = vcpus_[i].run->mmio;
  uint32_t len = mmio.len > 8 ? 8 : mmio.len;
  const Slot* slot = SlotOf(vm_, mmio.phys_addr, len);
  if (!slot) {
    s.mmio_outside++;  // no device here: reads see all ones
    if (!mmio.is_write) memset(mmio.data, 0xff, len);
    return;
  }
  s.mmio_in_ram++;
  if (!cfg_.api) {
    Fatal(i, kError, "MMIO exit inside guest RAM and no engine API to ask");
    return;
  }
  hugetlb_ras_status st = Check(i, kPathMmio, false, mmio.phys_addr);
  uint8_t* hva = slot->hva + (mmio.phys_addr - slot->gpa);
  switch (st.state) {
    case HUGETLB_RAS_HEALTHY:
      // Readable RAM: KVM cannot retry the access, so complete it with the RAM's own bytes.
      if (mmio.is_write) memcpy(hva, mmio.data, len);
      else memcpy(mmio.data, hva, len);
      return;
    case HUGETLB_RAS_LOST:
      // KVM completes the instruction at the next KVM_RUN whatever we do; the machine check is
      // queued first, so the guest takes it before its next instruction and never uses the value
      // (all ones) that lands in the destination register.
      if (!mmio.is_write) memset(mmio.data, 0xff, len);
      Lost(i, st, kPathMmio, pending, true);
      return;
    default:
      Fatal(i, kError, "MMIO exit inside guest RAM that the engine calls " + std::string(StateName(st.state)));
      return;
  }
}

}  // namespace ras_vmm
