// linux_vm: the Linux machine's life (Create, Start, Kick, Join, queued machine checks), its vCPU
// loop and its port I/O (the console, the control port, the i8042 reset). What a SIGBUS, an EFAULT
// or an MMIO exit inside RAM leads to is in linux_memory.cc.
#include "linux_vm.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>

#include "../linux/proto.h"
#include "mce.h"
#include "sigbus.h"

namespace ras_vmm {

namespace {

constexpr int kSigbusSlot = sigbus::kMaxThreads - 1;  // the bare-metal machine uses 0..N-1
constexpr uint16_t kI8042Data = 0x60, kI8042Command = 0x64;
constexpr uint8_t kI8042PulseReset = 0xfe;

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
  InstallWakeHandler(NudgeSignal());
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
  Wake(vcpu_.run, thread_, NudgeSignal());
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
  BlockAsyncSignals(NudgeSignal());
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
        uint64_t hva;
        if (TookSigbus(kSigbusSlot, &s, &hva)) OnSigbus(hva);
        continue;
      }
      if (e == EFAULT) {
        s.efault++;
        uint64_t inj = s.injected.load();
        size_t before = pending_.size();
        OnEfault();
        if (s.injected.load() == inj && pending_.size() == before) {
          if (!EfaultUnresolved(&s.efault_unresolved, &unresolved_in_a_row)) {
            Fatal(kLxError, "KVM_RUN keeps failing with EFAULT and the engine names no lost frame");
            break;
          }
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

}  // namespace ras_vmm
