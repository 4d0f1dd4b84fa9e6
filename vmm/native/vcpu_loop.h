// vcpu_loop: the vCPU threads and the loop every VMM built on hugetlb-ras needs (the contract in
// include/hugetlb_ras.h): after KVM_RUN fails with EINTR and a SIGBUS was recorded, check_hva;
// after EFAULT, kvm_run->memory_fault and next_lost; after an MMIO exit inside guest RAM,
// check_gpa. HEALTHY / RECOVERING: run on (an MMIO access to healthy RAM is completed with the
// RAM's own bytes), LOST: a machine check for that 4 KiB, NOT_RAM: the VMM's own MMIO error path.
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
#include "mce.h"
#include "proto.h"

namespace ras_vmm {

// How the vCPU thread learnt of a memory problem.
enum Path { kPathSigbus = 1, kPathEfault = 2, kPathMmio = 3, kPathNextLost = 4, kPathMemoryFault = 5 };

enum EventType {
  kEvGuest = 1,     // a guest report: v[0] = event, v[1..7] = a..g
  kEvInjected = 2,  // v: gpa, path, status, mcg_status, misc, whole_huge_page, code, errno
  kEvStall = 3,     // v: path, gpa (or hva), ns, final state
  kEvError = 4,     // text
};

struct Event {
  int type;
  int cpu;
  uint64_t v[8];
  std::string text;
};

enum RunState { kRunning = 0, kBye = 1, kHalted = 2, kFatal = 3, kError = 4, kKicked = 5 };

struct VcpuStats {
  std::atomic<uint64_t> runs{0}, pio{0}, mmio_in_ram{0}, mmio_outside{0}, efault{0}, efault_unresolved{0};
  std::atomic<uint64_t> eintr{0}, eintr_sigbus{0}, injected{0}, deferred{0}, inject_failed{0};
  std::atomic<uint64_t> healthy{0}, recovering{0}, lost{0}, not_ram{0};
  std::atomic<uint64_t> passes{0}, verified{0}, wrong_bytes{0}, filled{0}, guest_mces{0};
  std::atomic<int> state{kRunning};
  std::atomic<bool> done{false};
  std::mutex mu;
  std::string error;
};

struct Config {
  int vcpus = 1;
  uint64_t seed = 1;
  std::vector<ras_guest_range> ranges;
  const hugetlb_ras_api* api = nullptr;
  int wait_ms = HUGETLB_RAS_WAIT_MS_DEFAULT;
  int pass_event_ms = 200;  // at most one PASS event per vCPU per this many ms (counters are exact)
};

class Machine {
 public:
  using Sink = std::function<void(Event&&)>;
  Machine() = default;
  ~Machine();
  // Slots, system area, config, vCPUs; false with error() on failure.
  bool Create(const Config& cfg, const std::vector<Slot>& slots, const std::vector<uint8_t>& image);
  bool Start(Sink sink);
  void RequestStop();  // the guest sees config.stop and says BYE
  void Kick();         // every vCPU out of KVM_RUN at once (immediate_exit + a signal)
  bool AllDone() const;
  void Join();
  const std::string& error() const { return vm_.error; }
  int vcpus() const { return static_cast<int>(vcpus_.size()); }
  VcpuStats& stats(int i) { return *stats_[i]; }
  const Vm& vm() const { return vm_; }
  uint64_t duplicate_injections() const { return dup_.load(); }

 private:
  struct Pending {
    uint64_t gpa;
    int path;
    int code;
    int whole;
  };
  void Loop(int i);
  bool OnPio(int i, std::vector<Pending>* pending);
  void OnMmio(int i, std::vector<Pending>* pending);
  void OnEfault(int i, std::vector<Pending>* pending);
  void OnSigbus(int i, uint64_t hva, std::vector<Pending>* pending);
  // Asks the engine until it has an answer that is not RECOVERING; records stalls.
  hugetlb_ras_status Check(int i, int path, bool by_hva, uint64_t addr);
  void Lost(int i, const hugetlb_ras_status& st, int path, std::vector<Pending>* pending, bool now);
  bool DrainNextLost(int i, std::vector<Pending>* pending);
  bool InjectNow(int i, const Pending& p);
  bool OursHva(uint64_t hva) const;
  void Post(Event&& e);
  void Fatal(int i, int state, const std::string& why);

  Vm vm_;
  Config cfg_;
  std::vector<Vcpu> vcpus_;
  std::vector<std::unique_ptr<VcpuStats>> stats_;
  std::vector<std::thread> threads_;
  std::vector<uint64_t> last_pass_event_ns_;
  std::atomic<bool> quit_{false};
  Sink sink_;
  std::mutex lost_mu_;        // next_lost cursor and the frames already injected
  uint64_t lost_cursor_ = 0;
  std::set<uint64_t> injected_;
  std::atomic<uint64_t> dup_{0};
  bool started_ = false;
};

uint64_t NowNs();

}  // namespace ras_vmm
