#include "linux_vm.h"

#include <errno.h>
#include <stdio.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>

#include <algorithm>

#include "../linux/proto.h"
#include "mce.h"
#include "sigbus.h"

#ifndef KVM_EXIT_MEMORY_FAULT
#define KVM_EXIT_MEMORY_FAULT 39
#endif

namespace ras_vmm {

namespace {

constexpr int kSigbusSlot = sigbus::kMaxThreads - 1;  // the bare-metal machine uses 0..N-1
constexpr uint16_t kI8042Data = 0x60, kI8042Command = 0x64;
constexpr uint8_t kI8042PulseReset = 0xfe;

int NudgeSignal() { return SIGRTMIN + 8; }
void NudgeHandler(int) {}

void InstallNudgeHandler() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction sa = {};
    sa.sa_handler = NudgeHandler;
    sigemptyset(&sa.sa_mask);
    sigaction(NudgeSignal(), &sa, nullptr);
  });
}

void BlockAsyncSignals() {
  sigset_t s;
  sigfillset(&s);
  for (int sig : {SIGBUS, SIGSEGV, SIGILL, SIGFPE, SIGTRAP, NudgeSignal()}) sigdelset(&s, sig);
  pthread_sigmask(SIG_SETMASK, &s, nullptr);
}

struct MemoryFault {
  uint64_t flags, gpa, size;
};

}  // namespace

LinuxMachine::~LinuxMachine() {
  if (started_) {
    Kick();
    Join();
  }
  CloseVcpu(&vm_, &vcpu_);
  CloseVm(&vm_);
}

bool LinuxMachine::Create(const LinuxConfig& cfg, const std::vector<Slot>& slots) {
  cfg_ = cfg;
  if (!OpenVm(&vm_)) return false;
  if (!linux_boot::SetupVm(&vm_)) return false;
  for (const Slot& s : slots)
    if (!AddSlot(&vm_, s.gpa, s.size, s.hva)) return false;
  if (!linux_boot::Load(&vm_, cfg_.image, &loaded_)) return false;
  // The images are in guest RAM now.
  cfg_.image.kernel.clear();
  cfg_.image.kernel.shrink_to_fit();
  cfg_.image.initrd.clear();
  cfg_.image.initrd.shrink_to_fit();
  serial_ = std::make_unique<Serial8250>([this](std::string&& line) {
    Event e{kEvConsole, 0, {Since()}, std::move(line)};
    Post(std::move(e));
  });
  return linux_boot::CreateBootVcpu(&vm_, loaded_, &vcpu_);
}

bool LinuxMachine::Start(Sink sink) {
  sink_ = std::move(sink);
  InstallNudgeHandler();
  if (cfg_.api) {
    hugetlb_ras_lost buf[64];
    while (cfg_.api->next_lost(&lost_cursor_, buf, 64) > 0) {
    }
  }
  t0_ = NowNs();
  started_ = true;
  thread_ = std::thread(&LinuxMachine::Loop, this);
  return true;
}

void LinuxMachine::RequestStop() { control_ = RAS_LINUX_CONTROL_STOP; }

void LinuxMachine::Nudge() {
  if (!started_ || stats_.done.load()) return;
  __atomic_store_n(&vcpu_.run->immediate_exit, 1, __ATOMIC_SEQ_CST);
  pthread_kill(thread_.native_handle(), NudgeSignal());
}

void LinuxMachine::QueueMce(uint64_t gpa, bool ar) {
  {
    std::lock_guard<std::mutex> lock(req_mu_);
    requests_.push_back({gpa & ~0xfffull, 0, ar ? 4 : 5, 0, ar});
  }
  Nudge();
}

void LinuxMachine::Kick() {
  quit_ = true;
  Nudge();
}

void LinuxMachine::Join() {
  if (thread_.joinable()) thread_.join();
  started_ = false;
}

void LinuxMachine::Post(Event&& e) {
  if (sink_) sink_(std::move(e));
}

void LinuxMachine::Fatal(int state, const std::string& why) {
  {
    std::lock_guard<std::mutex> lock(stats_.mu);
    if (stats_.error.empty()) stats_.error = why;
  }
  stats_.state = state;
  Event e{kEvError, 0, {static_cast<uint64_t>(state)}, why};
  Post(std::move(e));
}

void LinuxMachine::Loop() {
  BlockAsyncSignals();
  sigbus::RegisterThread(kSigbusSlot);
  LinuxStats& s = stats_;
  kvm_run* run = vcpu_.run;
  uint64_t unresolved_in_a_row = 0;
  while (!quit_.load() && s.state.load() == kLxRunning) {
    // Clear the nudge before taking requests: one queued after this re-arms it.
    __atomic_store_n(&run->immediate_exit, 0, __ATOMIC_SEQ_CST);
    {
      std::lock_guard<std::mutex> lock(req_mu_);
      for (const Pending& p : requests_) pending_.push_back(p);
      requests_.clear();
    }
    if (!pending_.empty() && !mce::InProgress(vcpu_.fd)) {
      InjectNow(pending_.front());
      pending_.erase(pending_.begin());
    }
    s.runs++;
    int r = ioctl(vcpu_.fd, KVM_RUN, 0);
    if (r < 0) {
      int e = errno;
      if (e == EINTR || e == EAGAIN) {
        sigbus::Record rec;
        if (sigbus::Take(kSigbusSlot, &rec)) {
          s.eintr_sigbus++;
          OnSigbus(rec.addr);
        } else {
          s.eintr++;
        }
        continue;
      }
      if (e == EFAULT) {
        s.efault++;
        uint64_t inj = s.injected.load();
        size_t before = pending_.size();
        OnEfault();
        if (s.injected.load() == inj && pending_.size() == before) {
          s.efault_unresolved++;
          if (++unresolved_in_a_row > 20000) {
            Fatal(kLxError, "KVM_RUN keeps failing with EFAULT and the engine names no lost frame");
            break;
          }
          timespec ts = {0, 200000};
          nanosleep(&ts, nullptr);
        } else {
          unresolved_in_a_row = 0;
        }
        continue;
      }
      Fatal(kLxError, std::string("KVM_RUN: ") + strerror(e));
      break;
    }
    unresolved_in_a_row = 0;
    switch (run->exit_reason) {
      case KVM_EXIT_IO:
        s.pio++;
        OnPio();
        break;
      case KVM_EXIT_MMIO:
        OnMmio();
        break;
      case KVM_EXIT_INTR:
        s.eintr++;
        break;
      case KVM_EXIT_HLT:
        break;  // not with an in-kernel irqchip
      case KVM_EXIT_SHUTDOWN:
        Fatal(kLxTripleFault, "guest triple fault (KVM_EXIT_SHUTDOWN)" + Where());
        break;
      case KVM_EXIT_FAIL_ENTRY:
        Fatal(kLxError, "KVM_EXIT_FAIL_ENTRY, reason 0x" + std::to_string(run->fail_entry.hardware_entry_failure_reason));
        break;
      case KVM_EXIT_INTERNAL_ERROR:
        Fatal(kLxError, "KVM_EXIT_INTERNAL_ERROR, suberror " + std::to_string(run->internal.suberror) + Where());
        break;
      default:
        Fatal(kLxError, "unexpected KVM exit " + std::to_string(run->exit_reason));
        break;
    }
  }
  serial_->Flush();
  s.console_bytes = serial_->bytes();
  if (quit_.load() && s.state.load() == kLxRunning) s.state = kLxKicked;
  sigbus::UnregisterThread(kSigbusSlot);
  Event e{kEvExit, 0, {static_cast<uint64_t>(s.state.load()), Since()}, {}};
  Post(std::move(e));
  s.done = true;
}

// Where the vCPU is, for an error message: rip, cr0, cr3, cr4, efer and the internal-error data.
std::string LinuxMachine::Where() {
  kvm_regs r = {};
  kvm_sregs sr = {};
  ioctl(vcpu_.fd, KVM_GET_REGS, &r);
  ioctl(vcpu_.fd, KVM_GET_SREGS, &sr);
  char b[256];
  snprintf(b, sizeof b, " at rip 0x%llx (cr0 0x%llx cr3 0x%llx cr4 0x%llx efer 0x%llx)", (unsigned long long)r.rip,
           (unsigned long long)sr.cr0, (unsigned long long)sr.cr3, (unsigned long long)sr.cr4, (unsigned long long)sr.efer);
  std::string out = b;
  if (vcpu_.run->exit_reason == KVM_EXIT_INTERNAL_ERROR)
    for (uint32_t k = 0; k < vcpu_.run->internal.ndata && k < 16; k++) {
      snprintf(b, sizeof b, " data[%u]=0x%llx", k, (unsigned long long)vcpu_.run->internal.data[k]);
      out += b;
    }
  return out;
}

void LinuxMachine::OnPio() {
  LinuxStats& s = stats_;
  auto& io = vcpu_.run->io;
  uint8_t* data = reinterpret_cast<uint8_t*>(vcpu_.run) + io.data_offset;
  size_t n = static_cast<size_t>(io.size) * io.count;
  if (Serial8250::Claims(io.port) && io.size == 1) {
    for (uint32_t k = 0; k < io.count; k++) {
      if (io.direction == KVM_EXIT_IO_OUT) serial_->Out(io.port, data[k]);
      else data[k] = serial_->In(io.port);
    }
    s.console_bytes = serial_->bytes();
    return;
  }
  if (io.port == RAS_LINUX_PORT_CONTROL && io.direction == KVM_EXIT_IO_IN) {
    s.control_reads++;
    memset(data, 0, n);
    data[0] = control_.load();
    return;
  }
  if (io.port == kI8042Command && io.direction == KVM_EXIT_IO_OUT && data[0] == kI8042PulseReset) {
    // reboot=k: the guest's orderly end.
    s.state = kLxReset;
    return;
  }
  s.pio_other++;
  if (io.direction == KVM_EXIT_IO_IN) memset(data, 0, n);  // no device: 0 (i8042 and CMOS included)
  (void)kI8042Data;
}

hugetlb_ras_status LinuxMachine::Check(int path, bool by_hva, uint64_t addr) {
  LinuxStats& s = stats_;
  hugetlb_ras_status st = {};
  uint64_t t0 = NowNs();
  for (int tries = 0; tries < 100; tries++) {
    st = {};
    int rc = by_hva ? cfg_.api->check_hva(addr, cfg_.wait_ms, &st) : cfg_.api->check_gpa(addr, cfg_.wait_ms, &st);
    if (rc != 0) {
      Fatal(kLxError, "check_" + std::string(by_hva ? "hva" : "gpa") + " failed: " + std::to_string(rc));
      st.state = HUGETLB_RAS_NOT_RAM;
      return st;
    }
    if (st.state != HUGETLB_RAS_RECOVERING) break;
    s.recovering++;
  }
  switch (st.state) {
    case HUGETLB_RAS_HEALTHY: s.healthy++; break;
    case HUGETLB_RAS_LOST: s.lost++; break;
    case HUGETLB_RAS_NOT_RAM: s.not_ram++; break;
    default: break;
  }
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
    MemoryFault mf;
    memcpy(&mf, &run->mmio, sizeof(mf));
    hugetlb_ras_status st = Check(kPathMemoryFault, false, mf.gpa);
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
