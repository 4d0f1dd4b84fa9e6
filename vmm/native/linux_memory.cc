// linux_memory: the Linux machine's side of the memory-error contract (include/hugetlb_ras.h): a
// SIGBUS, an EFAULT from KVM_RUN or an MMIO exit inside guest RAM is a question to the engine; a
// LOST frame becomes a machine check for exactly that 4 KiB, on the instruction that touched it.
#include <errno.h>
#include <string.h>
#include <sys/ioctl.h>

#include <algorithm>

#include "linux_vm.h"
#include "mce.h"

namespace ras_vmm {

hugetlb_ras_status LinuxMachine::Check(int path, bool by_hva, uint64_t addr) {
  LinuxStats& s = stats_;
  hugetlb_ras_status st = {};
  uint64_t t0 = NowNs();
  int rc = AskEngine(cfg_.api, cfg_.wait_ms, by_hva, addr, &st, &s.recovering);
  if (rc != 0) {
    Fatal(kLxError, "check_" + std::string(by_hva ? "hva" : "gpa") + " failed: " + std::to_string(rc));
    st.state = HUGETLB_RAS_NOT_RAM;
    return st;
  }
  CountAnswer(&s, st.state);
  if (st.state != HUGETLB_RAS_LOST) {
    Event e{kEvStall, 0, {static_cast<uint64_t>(path), addr, NowNs() - t0, st.state, by_hva ? 1u : 0u, 0, 0, 0}, {}};
    Post(std::move(e));
  }
  return st;
}

void LinuxMachine::Lost(const hugetlb_ras_status& st, int path) {
  Pending p{st.gpa & ~0xfffull, path, st.code ? st.code : 4, static_cast<int>(st.whole_huge_page), true};
  if (std::find(injected_frames_.begin(), injected_frames_.end(), p.gpa) != injected_frames_.end()) stats_.duplicate++;
  if (!mce::InProgress(vcpu_.fd)) {
    InjectNow(p);
    return;
  }
  stats_.deferred++;
  pending_.push_back(p);
}

void LinuxMachine::InjectNow(const Pending& p) {
  LinuxStats& s = stats_;
  mce::Bits b;
  int err = mce::Inject(vcpu_.fd, vm_.amd, p.gpa, p.ar, &b);
  if (err) {
    s.inject_failed++;
  } else {
    s.injected++;
    if (!p.ar) s.injected_ao++;
    injected_frames_.push_back(p.gpa);
  }
  Event e{kEvInjected, 0, {p.gpa, static_cast<uint64_t>(p.path), b.status, b.mcg_status, b.misc, static_cast<uint64_t>(p.whole),
                           static_cast<uint64_t>(p.code), static_cast<uint64_t>(err)}, p.ar ? "AR" : "AO"};
  Post(std::move(e));
}

void LinuxMachine::OnSigbus(uint64_t hva) {
  if (!cfg_.api) return Fatal(kLxError, "SIGBUS on the vCPU and no engine API to ask");
  hugetlb_ras_status st = Check(kPathSigbus, true, hva);
  if (st.state == HUGETLB_RAS_LOST) Lost(st, kPathSigbus);
  else if (st.state == HUGETLB_RAS_NOT_RAM) Fatal(kLxError, "SIGBUS outside guest RAM (QEMU would abort)");
}

void LinuxMachine::OnEfault() {
  if (!cfg_.api) return Fatal(kLxError, "KVM_RUN failed with EFAULT and there is no engine API to ask");
  kvm_run* run = vcpu_.run;
  if (run->exit_reason == KVM_EXIT_MEMORY_FAULT) {
    hugetlb_ras_status st = Check(kPathMemoryFault, false, MemoryFaultGpa(run));
    if (st.state == HUGETLB_RAS_LOST) return Lost(st, kPathMemoryFault);
    if (st.state == HUGETLB_RAS_HEALTHY) return;
  }
  // No address: the frames the engine lost that this VM has not been told of.
  hugetlb_ras_lost buf[16];
  int n;
  while ((n = cfg_.api->next_lost(&lost_cursor_, buf, 16)) > 0) {
    for (int k = 0; k < n; k++) {
      if (buf[k].size > 4096) continue;
      uint64_t gpa = buf[k].gpa & ~0xfffull;
      if (std::find(injected_frames_.begin(), injected_frames_.end(), gpa) != injected_frames_.end()) continue;
      pending_.push_back({gpa, kPathNextLost, buf[k].code ? buf[k].code : 4, 0, true});
    }
  }
  if (!pending_.empty() && !mce::InProgress(vcpu_.fd)) {
    InjectNow(pending_.front());
    pending_.erase(pending_.begin());
  }
}

void LinuxMachine::OnMmio() {
  LinuxStats& s = stats_;
  auto& mmio = vcpu_.run->mmio;
  uint32_t len = mmio.len > 8 ? 8 : mmio.len;
  const Slot* slot = SlotOf(vm_, mmio.phys_addr, len);
  if (!slot) {
    s.mmio_outside++;
    if (!mmio.is_write) memset(mmio.data, 0xff, len);
    return;
  }
  s.mmio_in_ram++;
  if (!cfg_.api) return Fatal(kLxError, "MMIO exit inside guest RAM and no engine API to ask");
  hugetlb_ras_status st = Check(kPathMmio, false, mmio.phys_addr);
  uint8_t* hva = slot->hva + (mmio.phys_addr - slot->gpa);
  switch (st.state) {
    case HUGETLB_RAS_HEALTHY:
      if (mmio.is_write) memcpy(hva, mmio.data, len);
      else memcpy(mmio.data, hva, len);
      return;
    case HUGETLB_RAS_LOST: {
      // KVM retires the access at the next KVM_RUN whatever we answer, and a machine check
      // injected then arrives after the instruction: a guest process that maps a fresh page over
      // the lost one and returns from its SIGBUS handler would go on with the bytes we made up.
      // So complete the access without entering the guest (immediate_exit), put the registers
      // back as they were before the instruction, and inject: the guest takes the machine check
      // on the instruction that touched the lost frame, as on hardware, and re-executes it.
      kvm_regs before;
      bool rewind = ioctl(vcpu_.fd, KVM_GET_REGS, &before) == 0;
      if (!mmio.is_write) memset(mmio.data, 0xff, len);
      if (rewind) {
        __atomic_store_n(&vcpu_.run->immediate_exit, 1, __ATOMIC_SEQ_CST);
        int r = ioctl(vcpu_.fd, KVM_RUN, 0);
        int e = errno;
        __atomic_store_n(&vcpu_.run->immediate_exit, 0, __ATOMIC_SEQ_CST);
        if (r < 0 && (e == EINTR || e == EAGAIN) && ioctl(vcpu_.fd, KVM_SET_REGS, &before) == 0) s.mmio_rewound++;
      }
      Lost(st, kPathMmio);
      return;
    }
    default:
      Fatal(kLxError, "MMIO exit inside guest RAM that the engine calls not-RAM");
      return;
  }
}

}  // namespace ras_vmm
