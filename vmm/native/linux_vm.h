// linux_vm: the reference VMM's Linux mode: N vCPUs booting a bzImage (linux_boot; the APs found
// by the guest in an MP table and started by its INIT/SIPI through the in-kernel LAPIC), an 8250
// console (serial), the in-kernel irqchip and PIT, and the same memory-error contract as the
// bare-metal guest's vCPU loop (include/hugetlb_ras.h, mce_delivery.h): a SIGBUS, an EFAULT from
// KVM_RUN or an MMIO exit inside guest RAM is a question to the engine; a LOST frame the access
// named becomes an AR machine check on that vCPU, one only next_lost() names an AO. The VMM may
// also queue one itself (AO when the engine reports a loss the guest has not touched yet: on
// vCPU 0, as QEMU's first_cpu). The guest ends by pulsing the i8042 reset line (reboot=k).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "hugetlb_ras.h"
#include "kvm_vm.h"
#include "linux_boot.h"
#include "ram_exit.h"
#include "mce_delivery.h"
#include "serial.h"
#include "vcpu_thread.h"

namespace ras_vmm {

// Event types beyond vcpu_thread.h's (kEvInjected, kEvStall and kEvError are shared).
enum LinuxEventType {
  kEvConsole = 10,  // text: one line of the guest's serial console; v[0] = ns since start
  kEvExit = 11,     // v[0] = LinuxState, v[1] = ns since start
};

enum LinuxState { kLxRunning = 0, kLxReset = 1, kLxTripleFault = 2, kLxError = 3, kLxKicked = 4 };

struct LinuxConfig {
  int vcpus = 1;
  const hugetlb_ras_api* api = nullptr;
  int wait_ms = HUGETLB_RAS_WAIT_MS_DEFAULT;
  linux_boot::Image image;
  // A migration destination: the VM (irqchip, PIT, CPUID, MCE banks) and its vCPUs, nothing
  // loaded and nothing booted; RAM and state come from the stream (vmm/src/migration).
  bool restore = false;
};

struct LinuxStats {
  std::atomic<uint64_t> runs{0}, pio{0}, pio_other{0}, mmio_in_ram{0}, mmio_outside{0}, efault{0}, efault_unresolved{0};
  std::atomic<uint64_t> eintr{0}, eintr_sigbus{0}, injected{0}, injected_ao{0}, deferred{0}, inject_failed{0}, duplicate{0};
  std::atomic<uint64_t> pieces{0}, merged{0}, disabled{0}, shutdown{0}, hwpoison{0}, vcpus_entered{0};
  std::atomic<uint64_t> healthy{0}, recovering{0}, lost{0}, not_ram{0}, console_bytes{0}, control_reads{0}, mmio_rewound{0};
  std::atomic<int> state{kLxRunning};
  std::atomic<bool> done{false};
  std::mutex mu;
  std::string error;
};

class LinuxMachine : public GuestMemoryOwner {
 public:
  using Sink = std::function<void(Event&&)>;
  LinuxMachine() = default;
  ~LinuxMachine();
  bool Create(const LinuxConfig& cfg, const std::vector<Slot>& slots);
  bool Start(Sink sink);
  void RequestStop();                       // the walker reads STOP at its next heartbeat
  void QueueMce(uint64_t gpa, bool ar);     // injected on vCPU 0's thread at its next exit
  void Kick();                              // out of KVM_RUN for good
  bool Done() const { return stats_.done.load(); }
  int vcpus() const { return static_cast<int>(vcpus_.size()); }
  void Join();
  // After a pause (Kick, Join): the threads may Start again (a migration that did not hand over).
  void PrepareRestart();
  // Userspace device state for a migration stream (vcpu_state.h records: the UART, the control
  // port's value, the frames the guest was told of); only with the vCPU threads joined. A frame
  // whose machine check was still queued or deferred at the pause is not told: the restored VM's
  // Start() gives it its AO there, as it does a frame lost while the guest was stopped.
  void SaveDevices(std::vector<uint8_t>* out);
  bool RestoreDevices(const uint8_t* data, size_t len, std::string* err);
  const Vcpu& vcpu(int i) const { return vcpus_[i]; }
  Vm* mutable_vm() { return &vm_; }
  LinuxStats& stats() { return stats_; }
  const linux_boot::Loaded& loaded() const { return loaded_; }
  const Vm& vm() const { return vm_; }
  const std::string& error() const { return vm_.error; }

 private:
  struct Request {
    uint64_t gpa;
    bool ar;
    int path = 0;  // 0: the VMM asked (QueueMce); kPathNextLost: a restored VM's untold frame
  };
  void TellUntold();
  void Loop(int i);
  void Nudge(int i);
  void NudgeAll();
  void OnPio(int i);
  std::string Where(int i);
  void OnMmio(int i);
  bool OnEfault(int i);
  void OnSigbus(int i, uint64_t hva);
  bool Check(int i, int path, bool by_hva, uint64_t addr, hugetlb_ras_status* st) override;  // ram_exit.h
  void Lost(int i, uint64_t gpa, bool ar, int path, int code, int whole) override;
  void Outcome(int i, const ras_vmm::Outcome& o);
  void Post(Event&& e);
  void Fatal(int i, int state, const std::string& why) override;
  uint64_t Since() const { return NowNs() - t0_; }

  Vm vm_;
  std::vector<Vcpu> vcpus_;
  std::vector<int> slot_;
  LinuxConfig cfg_;
  linux_boot::Loaded loaded_;
  LinuxStats stats_;
  std::unique_ptr<Serial8250> serial_;
  std::mutex serial_mu_;
  std::vector<std::thread> threads_;
  std::atomic<int> running_{0};
  std::atomic<bool> quit_{false};
  std::atomic<bool> go_{false};
  std::atomic<uint8_t> control_{0};
  std::mutex req_mu_;
  std::vector<Request> requests_;  // from other threads, for vCPU 0
  Delivery mce_;
  std::mutex lost_mu_;
  std::set<uint64_t> injected_frames_;
  uint64_t t0_ = 0;
  Sink sink_;
  bool started_ = false;
};

}  // namespace ras_vmm
