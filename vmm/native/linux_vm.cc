// linux_vm: the Linux machine's life (Create, Start, Kick, Join, queued machine checks), its vCPU
// loop and its port I/O (the console, the control port, the i8042 reset). What a SIGBUS, an EFAULT
// or an MMIO exit inside RAM leads to is in linux_memory.cc.
#include "linux_vm.h"

#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>

#include "../linux/proto.h"
#include "mce.h"
#include "sigbus.h"
#include "vcpu_state.h"

namespace ras_vmm {

namespace {

constexpr uint16_t kI8042Data = 0x60, kI8042Command = 0x64;
constexpr uint8_t kI8042PulseReset = 0xfe;

}  // namespace

LinuxMachine::~LinuxMachine() {
  if (started_) {
    Kick();
    Join();
  }
  for (Vcpu& v : vcpus_) CloseVcpu(&vm_, &v);
  CloseVm(&vm_);
}

bool LinuxMachine::Create(const LinuxConfig& cfg, const std::vector<Slot>& slots) {
  cfg_ = cfg;
  if (cfg.vcpus < 1 || cfg.vcpus > 32) {
    vm_.error = "vcpus must be 1..32";
    return false;
  }
  if (!OpenVm(&vm_)) return false;
  if (!linux_boot::SetupVm(&vm_)) return false;
  for (const Slot& s : slots)
    if (!AddSlot(&vm_, s.gpa, s.size, s.hva)) return false;
  if (!cfg.restore) {
    if (!linux_boot::Load(&vm_, cfg_.image, &loaded_)) return false;
    if (!linux_boot::WriteMpTable(&vm_, cfg.vcpus)) return false;
  }
  // The images are in guest RAM now.
  cfg_.image.kernel.clear();
  cfg_.image.kernel.shrink_to_fit();
  cfg_.image.initrd.clear();
  cfg_.image.initrd.shrink_to_fit();
  serial_ = std::make_unique<Serial8250>([this](std::string&& line) {
    Event e{kEvConsole, 0, {Since()}, std::move(line)};
    Post(std::move(e));
  });
  vcpus_.resize(cfg.vcpus);
  if (cfg.restore) {
    // CPUID, APIC id and MCE banks as at the source; the registers come from the stream.
    if (!linux_boot::CreateApVcpu(&vm_, 0, &vcpus_[0])) return false;
  } else if (!linux_boot::CreateBootVcpu(&vm_, loaded_, &vcpus_[0])) {
    return false;
  }
  for (int i = 1; i < cfg.vcpus; i++)
    if (!linux_boot::CreateApVcpu(&vm_, i, &vcpus_[i])) return false;
  slot_.assign(cfg.vcpus, -1);
  mce_.Init(
      mce::ModelOf(vm_), vm_.mcg_cap, cfg.vcpus, [this](int k) { Nudge(k); },
      [this](int k, const ras_vmm::Outcome& o) { Outcome(k, o); });
  return true;
}

bool LinuxMachine::Start(Sink sink) {
  sink_ = std::move(sink);
  InstallWakeHandler(NudgeSignal());
  if (cfg_.restore) TellUntold();
  if (cfg_.api) {
    // Frames lost before this VM started are not news to it (its own are found by the guest's accesses).
    hugetlb_ras_lost buf[64];
    for (int i = 0; i < vcpus(); i++)
      while (cfg_.api->next_lost(mce_.Cursor(i), buf, 64) > 0) {
      }
  }
  t0_ = NowNs();
  started_ = true;
  running_ = vcpus();
  threads_.reserve(vcpus());
  for (int i = 0; i < vcpus(); i++) threads_.emplace_back(&LinuxMachine::Loop, this, i);
  go_.store(true, std::memory_order_release);
  return true;
}

void LinuxMachine::RequestStop() { control_ = RAS_LINUX_CONTROL_STOP; }

void LinuxMachine::Nudge(int i) {
  if (!started_ || !go_.load() || i >= static_cast<int>(threads_.size()) || stats_.done.load()) return;
  Wake(vcpus_[i].run, threads_[i], NudgeSignal());
}

void LinuxMachine::NudgeAll() {
  for (int i = 0; i < vcpus(); i++) Nudge(i);
}

void LinuxMachine::QueueMce(uint64_t gpa, bool ar) {
  {
    std::lock_guard<std::mutex> lock(req_mu_);
    requests_.push_back({gpa & ~0xfffull, ar});
  }
  Nudge(0);
}

void LinuxMachine::Kick() {
  quit_ = true;
  NudgeAll();
}

void LinuxMachine::Join() {
  for (std::thread& t : threads_)
    if (t.joinable()) t.join();
  started_ = false;
}

void LinuxMachine::PrepareRestart() {
  threads_.clear();
  quit_ = false;
  go_ = false;
  stats_.state = kLxRunning;
  stats_.done = false;
}

void LinuxMachine::Post(Event&& e) {
  if (sink_) sink_(std::move(e));
}

void LinuxMachine::Fatal(int i, int state, const std::string& why) {
  {
    std::lock_guard<std::mutex> lock(stats_.mu);
    if (stats_.error.empty()) stats_.error = why;
  }
  int expect = kLxRunning;
  stats_.state.compare_exchange_strong(expect, state);
  Event e{kEvError, i, {static_cast<uint64_t>(state)}, why};
  Post(std::move(e));
  NudgeAll();  // the whole machine stops
}

void LinuxMachine::Loop(int i) {
  BlockAsyncSignals(NudgeSignal());
  while (!go_.load(std::memory_order_acquire)) sched_yield();
  int slot = sigbus::RegisterThread();
  slot_[i] = slot;
  LinuxStats& s = stats_;
  kvm_run* run = vcpus_[i].run;
  int fd = vcpus_[i].fd;
  uint64_t unresolved_in_a_row = 0;
  if (slot < 0) Fatal(i, kLxError, "no free SIGBUS slot for a vCPU thread");
  s.vcpus_entered++;
  // The gate clears immediate_exit before it looks at quit: a Kick() is never lost (an idle guest
  // with the in-kernel irqchip would otherwise never leave KVM_RUN).
  while (s.state.load() == kLxRunning && EnterGate(run, &quit_)) {
    if (i == 0) {
      std::vector<Request> reqs;
      {
        std::lock_guard<std::mutex> lock(req_mu_);
        reqs.swap(requests_);
      }
      for (const Request& q : reqs)
        if (q.ar || mce_.FirstAo(q.gpa)) Lost(i, q.gpa, q.ar, q.path, q.ar ? 4 : 5, 0);  // an AO once per VM
    }
    mce_.BeforeRun(i, fd);
    s.runs++;
    int r = RunVcpu(fd, run, slot);
    if (r < 0) {
      int e = errno;
      if (e == EINTR || e == EAGAIN || e == EHWPOISON) {
        if (e == EHWPOISON) s.hwpoison++;
        uint64_t hva;
        if (TookSigbus(slot, &s, &hva)) OnSigbus(i, hva);
        continue;
      }
      if (e == EFAULT) {
        s.efault++;
        if (!OnEfault(i)) {
          if (!EfaultUnresolved(&s.efault_unresolved, &unresolved_in_a_row)) {
            Fatal(i, kLxError, "KVM_RUN keeps failing with EFAULT and the engine names no lost frame");
            break;
          }
        } else {
          unresolved_in_a_row = 0;
        }
        continue;
      }
      Fatal(i, kLxError, std::string("KVM_RUN: ") + strerror(e));
      break;
    }
    unresolved_in_a_row = 0;
    switch (run->exit_reason) {
      case KVM_EXIT_IO:
        s.pio++;
        OnPio(i);
        break;
      case KVM_EXIT_MMIO:
        OnMmio(i);
        break;
      case KVM_EXIT_INTR:
        s.eintr++;
        break;
      case KVM_EXIT_HLT:
        break;  // not with an in-kernel irqchip
      case KVM_EXIT_SHUTDOWN:
        Fatal(i, kLxTripleFault, "guest triple fault (KVM_EXIT_SHUTDOWN) on vCPU " + std::to_string(i) + Where(i));
        break;
      case KVM_EXIT_FAIL_ENTRY:
        Fatal(i, kLxError, "KVM_EXIT_FAIL_ENTRY, reason 0x" + std::to_string(run->fail_entry.hardware_entry_failure_reason));
        break;
      case KVM_EXIT_INTERNAL_ERROR:
        Fatal(i, kLxError, "KVM_EXIT_INTERNAL_ERROR, suberror " + std::to_string(run->internal.suberror) + Where(i));
        break;
      default:
        Fatal(i, kLxError, "unexpected KVM exit " + std::to_string(run->exit_reason));
        break;
    }
  }
  sigbus::UnregisterThread(slot);
  if (running_.fetch_sub(1) == 1) {
    // The last vCPU out: the machine's end.
    {
      std::lock_guard<std::mutex> lock(serial_mu_);
      serial_->Flush();
      s.console_bytes = serial_->bytes();
    }
    if (quit_.load() && s.state.load() == kLxRunning) s.state = kLxKicked;
    Event e{kEvExit, 0, {static_cast<uint64_t>(s.state.load()), Since()}, {}};
    Post(std::move(e));
    s.done = true;
  } else if (s.state.load() != kLxRunning) {
    NudgeAll();
  }
}

// Where the vCPU is, for an error message: rip, cr0, cr3, cr4, efer and the internal-error data.
std::string LinuxMachine::Where(int i) {
  const Vcpu& vcpu_ = vcpus_[i];
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

void LinuxMachine::OnPio(int i) {
  LinuxStats& s = stats_;
  kvm_run* run = vcpus_[i].run;
  auto& io = run->io;
  uint8_t* data = reinterpret_cast<uint8_t*>(run) + io.data_offset;
  size_t n = static_cast<size_t>(io.size) * io.count;
  if (Serial8250::Claims(io.port) && io.size == 1) {
    std::lock_guard<std::mutex> lock(serial_mu_);
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
    // reboot=k: the guest's orderly end, for every vCPU.
    int expect = kLxRunning;
    s.state.compare_exchange_strong(expect, kLxReset);
    NudgeAll();
    return;
  }
  s.pio_other++;
  if (io.direction == KVM_EXIT_IO_IN) memset(data, 0, n);  // no device: 0 (i8042 and CMOS included)
  (void)kI8042Data;
}

}  // namespace ras_vmm
