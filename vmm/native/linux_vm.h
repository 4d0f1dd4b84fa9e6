// linux_vm: the reference VMM's Linux mode: one vCPU booting a bzImage (linux_boot), an 8250 console
// (serial), the in-kernel irqchip and PIT, and the same memory-error contract as the bare-metal
// guest's vCPU loop (include/hugetlb_ras.h): a SIGBUS, an EFAULT from KVM_RUN or an MMIO exit
// inside guest RAM is a question to the engine; a LOST frame becomes a machine check (AR) for
// exactly that 4 KiB. The VMM may also queue one itself (e.g. AO when the engine reports a loss
// the guest has not touched yet). The guest ends by pulsing the i8042 reset line (reboot=k).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "hugetlb_ras.h"
#include "kvm_vm.h"
#include "linux_boot.h"
#include "serial.h"
#include "vcpu_loop.h"

namespace ras_vmm {

// Event types beyond vcpu_loop.h's (kEvInjected, kEvStall and kEvError are shared).
enum LinuxEventType {
  kEvConsole = 10,  // text: one line of the guest's serial console; v[0] = ns since start
  kEvExit = 11,     // v[0] = LinuxState, v[1] = ns since start
};

enum LinuxState { kLxRunning = 0, kLxReset = 1, kLxTripleFault = 2, kLxError = 3, kLxKicked = 4 };

struct LinuxConfig {
  const hugetlb_ras_api* api = nullptr;
  int wait_ms = HUGETLB_RAS_WAIT_MS_DEFAULT;
  linux_boot::Image image;
};

struct LinuxStats {
  std::atomic<uint64_t> runs{0}, pio{0}, pio_other{0}, mmio_in_ram{0}, mmio_outside{0}, efault{0}, efault_unresolved{0};
  std::atomic<uint64_t> eintr{0}, eintr_sigbus{0}, injected{0}, injected_ao{0}, deferred{0}, inject_failed{0}, duplicate{0};
  std::atomic<uint64_t> healthy{0}, recovering{0}, lost{0}, not_ram{0}, console_bytes{0}, control_reads{0}, mmio_rewound{0};
  std::atomic<int> state{kLxRunning};
  std::atomic<bool> done{false};
  std::mutex mu;
  std::string error;
};

class LinuxMachine {
 public:
  using Sink = std::function<void(Event&&)>;
  LinuxMachine() = default;
  ~LinuxMachine();
  bool Create(const LinuxConfig& cfg, const std::vector<Slot>& slots);
  bool Start(Sink sink);
  void RequestStop();                       // the walker reads STOP at its next heartbeat
  void QueueMce(uint64_t gpa, bool ar);     // injected on the vCPU thread at its next exit
  void Kick();                              // out of KVM_RUN for good
  bool Done() const { return stats_.done.load(); }
  void Join();
  LinuxStats& stats() { return stats_; }
  const linux_boot::Loaded& loaded() const { return loaded_; }
  const Vm& vm() const { return vm_; }
  const std::string& error() const { return vm_.error; }

 private:
  struct Pending {
    uint64_t gpa;
    int path;
    int code;
    int whole;
    bool ar;
  };
  void Loop();
  void Nudge();
  void OnPio();
  std::string Where();
  void OnMmio();
  void OnEfault();
  void OnSigbus(uint64_t hva);
  hugetlb_ras_status Check(int path, bool by_hva, uint64_t addr);
  void Lost(const hugetlb_ras_status& st, int path);
  void InjectNow(const Pending& p);
  void Post(Event&& e);
  void Fatal(int state, const std::string& why);
  uint64_t Since() const { return NowNs() - t0_; }

  Vm vm_;
  Vcpu vcpu_;
  LinuxConfig cfg_;
  linux_boot::Loaded loaded_;
  LinuxStats stats_;
  std::unique_ptr<Serial8250> serial_;
  std::thread thread_;
  std::atomic<bool> quit_{false};
  std::atomic<uint8_t> control_{0};
  std::mutex req_mu_;
  std::vector<Pending> requests_;  // from other threads
  std::vector<Pending> pending_;   // the vCPU thread's, waiting for MCG_STATUS.MCIP to clear
  std::vector<uint64_t> injected_frames_;
  uint64_t lost_cursor_ = 0;
  uint64_t t0_ = 0;
  Sink sink_;
  bool started_ = false;
};

}  // namespace ras_vmm
