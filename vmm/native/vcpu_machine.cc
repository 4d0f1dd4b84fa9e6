// vcpu_machine: the bare-metal Machine's life: its VM, slots, system area and vCPUs (Create), its
// threads (Start, Kick, Join), the guest's stop flag, and the events and errors it posts. The vCPU
// loop is in vcpu_loop.cc, its memory-error handling in vcpu_memory.cc.
#include <pthread.h>
#include <errno.h>
#include <sched.h>

#include <cstddef>

#include "sigbus.h"
#include "vcpu_loop.h"

namespace ras_vmm {

Machine::~Machine() {
  if (started_) {
    quit_ = true;
    Kick();
    Join();
  }
  for (Vcpu& v : vcpus_) CloseVcpu(&vm_, &v);
  CloseVm(&vm_);
}

bool Machine::Create(const Config& cfg, const std::vector<Slot>& slots, const std::vector<uint8_t>& image) {
  cfg_ = cfg;
  if (cfg.vcpus < 1 || cfg.vcpus > RAS_GUEST_MAX_CPUS || cfg.vcpus > sigbus::kMaxThreads) {
    vm_.error = "vcpus must be 1.." + std::to_string(RAS_GUEST_MAX_CPUS);
    return false;
  }
  if (!cfg.restore && (cfg.ranges.empty() || cfg.ranges.size() > RAS_GUEST_MAX_RANGES)) {
    vm_.error = "1.." + std::to_string(RAS_GUEST_MAX_RANGES) + " data ranges";
    return false;
  }
  if (!OpenVm(&vm_)) return false;
  for (const Slot& s : slots)
    if (!AddSlot(&vm_, s.gpa, s.size, s.hva)) return false;
  uint64_t frames = 0;
  for (const ras_guest_range& r : cfg.ranges) {
    if ((r.gpa | r.size) & 0xfff || r.size == 0 || r.gpa < RAS_GUEST_SYSTEM_END || r.gpa + r.size > RAS_GUEST_MAPPED_END ||
        !SlotOf(vm_, r.gpa, r.size)) {
      vm_.error = "a data range must be 4 KiB aligned, inside one region, above 2 MiB and below 4 GiB";
      return false;
    }
    frames += r.size >> 12;
  }
  if (frames > RAS_GUEST_MAX_FRAMES) {
    vm_.error = "data ranges hold more frames than the guest tracks";
    return false;
  }
  if (cfg.restore) return CreateVcpus();
  if (!WriteSystemArea(&vm_, image.data(), image.size())) return false;
  auto* gc = reinterpret_cast<ras_guest_config*>(SlotOf(vm_, 0)->hva + RAS_GUEST_CONFIG);
  gc->magic = RAS_GUEST_MAGIC;
  gc->ncpus = static_cast<uint64_t>(cfg.vcpus);
  gc->seed = cfg.seed;
  gc->stop = 0;
  gc->mc_touch = cfg.mc_touch;
  gc->probe = cfg.probe;
  gc->nranges = cfg.ranges.size();
  for (size_t i = 0; i < cfg.ranges.size(); i++) gc->ranges[i] = cfg.ranges[i];
  return CreateVcpus();
}

bool Machine::CreateVcpus() {
  const Config& cfg = cfg_;
  vcpus_.resize(cfg.vcpus);
  for (int i = 0; i < cfg.vcpus; i++) {
    stats_.push_back(std::make_unique<VcpuStats>());
    if (!CreateVcpu(&vm_, i, &vcpus_[i], !cfg.restore)) return false;
  }
  last_pass_event_ns_.assign(cfg.vcpus, 0);
  slot_.assign(cfg.vcpus, -1);
  poll_wanted_.reset(new std::atomic<bool>[cfg.vcpus]);
  for (int i = 0; i < cfg.vcpus; i++) poll_wanted_[i] = false;
  mce_.Init(
      mce::ModelOf(vm_), vm_.mcg_cap, cfg.vcpus, [this](int k) { Nudge(k); },
      [this](int k, const ras_vmm::Outcome& o) { Outcome(k, o); });
  return true;
}

void Machine::PrepareRestart() {
  threads_.clear();
  quit_ = false;
  go_ = false;
  for (auto& s : stats_) {
    s->state = kRunning;
    s->done = false;
  }
}

bool Machine::Start(Sink sink) {
  sink_ = std::move(sink);
  InstallWakeHandler(KickSignal());
  if (cfg_.api) {
    // Frames lost before this VM started are not news to it (its own are found by the guest's accesses).
    hugetlb_ras_lost buf[64];
    for (int i = 0; i < vcpus(); i++)
      while (cfg_.api->next_lost(mce_.Cursor(i), buf, 64) > 0) {
      }
  }
  started_ = true;
  threads_.reserve(vcpus());
  for (int i = 0; i < vcpus(); i++) threads_.emplace_back(&Machine::Loop, this, i);
  go_.store(true, std::memory_order_release);  // every thread exists: vCPUs may nudge each other
  return true;
}

void Machine::RequestStop() {
  // From the JS thread: guest RAM through the guarded copy where the engine has one.
  uint64_t one = 1;
  int rc = GuestCopy(cfg_.api, SlotOf(vm_, 0)->gpa + RAS_GUEST_CONFIG + offsetof(ras_guest_config, stop), &one, sizeof one, true,
                     cfg_.wait_ms);
  if (rc == -ENOSYS) {
    auto* gc = reinterpret_cast<ras_guest_config*>(SlotOf(vm_, 0)->hva + RAS_GUEST_CONFIG);
    __atomic_store_n(&gc->stop, 1, __ATOMIC_SEQ_CST);
  }
  // rc 1 (the config frame is lost) or an error: the guest cannot be asked; stop() kicks it.
}

void Machine::Kick() {
  quit_ = true;
  for (size_t i = 0; i < threads_.size(); i++) {
    if (stats_[i]->done.load()) continue;
    Wake(vcpus_[i].run, threads_[i], KickSignal());
  }
}

// Out of KVM_RUN once (a broadcast piece or a deferred AO for it), not for good.
void Machine::Nudge(int i) {
  if (!started_ || i >= static_cast<int>(threads_.size()) || stats_[i]->done.load()) return;
  Wake(vcpus_[i].run, threads_[i], KickSignal());
}

bool Machine::AllDone() const {
  for (const auto& s : stats_)
    if (!s->done.load()) return false;
  return true;
}

void Machine::Join() {
  for (std::thread& t : threads_)
    if (t.joinable()) t.join();
  started_ = false;
}

void Machine::Post(Event&& e) {
  if (sink_) sink_(std::move(e));
}

void Machine::Fatal(int i, int state, const std::string& why) {
  VcpuStats& s = *stats_[i];
  {
    std::lock_guard<std::mutex> lock(s.mu);
    if (s.error.empty()) s.error = why;
  }
  s.state = state;
  Event e{kEvError, i, {}, why};
  e.v[0] = static_cast<uint64_t>(state);
  Post(std::move(e));
}

bool Machine::OursHva(uint64_t hva) const {
  for (const Slot& s : vm_.slots)
    if (hva >= reinterpret_cast<uint64_t>(s.hva) && hva - reinterpret_cast<uint64_t>(s.hva) < s.size) return true;
  return false;
}

}  // namespace ras_vmm
