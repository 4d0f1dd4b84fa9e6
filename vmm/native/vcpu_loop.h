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
#include "mce_delivery.h"
#include "ram_exit.h"
#include "proto.h"
#include "slot_hole.h"
#include "vcpu_thread.h"

namespace ras_vmm {

enum RunState { kRunning = 0, kBye = 1, kHalted = 2, kFatal = 3, kError = 4, kKicked = 5 };

struct VcpuStats {
  std::atomic<uint64_t> runs{0}, pio{0}, mmio_in_ram{0}, mmio_outside{0}, efault{0}, efault_unresolved{0};
  std::atomic<uint64_t> eintr{0}, eintr_sigbus{0}, injected{0}, deferred{0}, inject_failed{0};
  std::atomic<uint64_t> injected_ao{0}, pieces{0}, merged{0}, disabled{0}, shutdown{0}, mmio_rewound{0}, hwpoison{0};
  std::atomic<uint64_t> healthy{0}, recovering{0}, lost{0}, not_ram{0};
  std::atomic<uint64_t> passes{0}, verified{0}, wrong_bytes{0}, filled{0}, guest_mces{0}, polls_raised{0};
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
  int pass_event_ms = 200;
  // A VMM that takes a lost frame out of KVM's memory slots (slot_hole.h): every later guest
  // access to it is an MMIO exit. Only for data slots: the first region (code, page tables) stays.
  bool unmap_lost = false;
  uint64_t probe = 0;       // tests: the guest's vCPU 0 probes this frame once it is lost (proto.h)
  uint64_t mc_touch = 0;    // tests: a GPA the guest's #MC handler reads before clearing MCIP  // at most one PASS event per vCPU per this many ms (counters are exact)
  bool restore = false;     // a migration destination: RAM and vCPU state come from the stream, nothing is booted
};

class Machine : public GuestMemoryOwner {
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
  // Migration (vmm/native/migration_addon.cc): the vCPU fds and kvm_runs while the threads are
  // joined, the VM for its dirty log, and a restart of joined threads (a migration that failed).
  const Vcpu& vcpu(int i) const { return vcpus_[i]; }
  Vm* mutable_vm() { return &vm_; }
  void PrepareRestart();

 private:
  bool CreateVcpus();
  void Loop(int i);
  bool OnPio(int i);
  void OnMmio(int i);
  // Returns true when it told the guest something (a machine check decided for this exit).
  bool OnEfault(int i);
  void OnSigbus(int i, uint64_t hva);
  // GuestMemoryOwner (ram_exit.h): Check records stalls as events.
  bool Check(int i, int path, bool by_hva, uint64_t addr, hugetlb_ras_status* st) override;
  void Lost(int i, uint64_t gpa, bool ar, int path, int code, int whole) override;
  bool DrainNextLost(int i);
  // AMD: after a deferred (action-optional) error went into vCPU i's bank, the guest's poll
  // interrupt (RAS_GUEST_POLL_VECTOR) through KVM_INTERRUPT when it can take one, else an
  // interrupt window is asked for. On vCPU i's thread, before KVM_RUN.
  void RaisePoll(int i);
  // With cfg_.unmap_lost: the frame out of KVM's slots (not out of the first region).
  void Unmap(int i, uint64_t gpa);
  void Outcome(int i, const ras_vmm::Outcome& o);
  void Nudge(int i);
  bool OursHva(uint64_t hva) const;
  void Post(Event&& e);
  void Fatal(int i, int state, const std::string& why) override;

  Vm vm_;
  Config cfg_;
  std::vector<Vcpu> vcpus_;
  std::vector<std::unique_ptr<VcpuStats>> stats_;
  std::vector<std::thread> threads_;
  std::vector<uint64_t> last_pass_event_ns_;
  std::atomic<bool> quit_{false};
  std::atomic<bool> go_{false};
  Sink sink_;
  Delivery mce_;
  std::vector<int> slot_;     // each vCPU thread's sigbus slot
  std::unique_ptr<std::atomic<bool>[]> poll_wanted_;
  SlotHoles holes_;  // per vCPU: a deferred error waits for its poll
  std::mutex lost_mu_;        // the frames a machine check was injected for (AR or AO)
  std::set<uint64_t> injected_;
  std::atomic<uint64_t> dup_{0};  // AR for a frame already injected (another access to it)
  bool started_ = false;
};

}  // namespace ras_vmm
