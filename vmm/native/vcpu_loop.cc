#include "vcpu_loop.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>

#include "sigbus.h"

#ifndef KVM_EXIT_MEMORY_FAULT
#define KVM_EXIT_MEMORY_FAULT 39  // Linux >= 6.8 (KVM_CAP_MEMORY_FAULT_INFO); 6.1 headers lack it
#endif

namespace ras_vmm {

namespace {

// kvm_run->memory_fault (same union as mmio), for headers that predate it.
struct MemoryFault {
  uint64_t flags, gpa, size;
};

int KickSignal() { return SIGRTMIN + 7; }
void KickHandler(int) {}

void InstallKickHandler() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction sa = {};
    sa.sa_handler = KickHandler;
    sigemptyset(&sa.sa_mask);
    sigaction(KickSignal(), &sa, nullptr);
  });
}

// vCPU threads take no asynchronous signal but the kick; faults (SIGBUS from KVM included: it is
// sent, not forced, so a blocked one would stay pending) stay open.
void BlockAsyncSignals() {
  sigset_t s;
  sigfillset(&s);
  for (int sig : {SIGBUS, SIGSEGV, SIGILL, SIGFPE, SIGTRAP, KickSignal()}) sigdelset(&s, sig);
  pthread_sigmask(SIG_SETMASK, &s, nullptr);
}

const char* StateName(uint32_t s) {
  switch (s) {
    case HUGETLB_RAS_HEALTHY: return "healthy";
    case HUGETLB_RAS_RECOVERING: return "recovering";
    case HUGETLB_RAS_LOST: return "lost";
    default: return "not-ram";
  }
}

// Registers for a post-mortem of a vCPU that died.
std::string DescribeVcpu(int fd) {
  kvm_regs r = {};
  kvm_sregs sr = {};
  char buf[256];
  if (ioctl(fd, KVM_GET_REGS, &r) != 0 || ioctl(fd, KVM_GET_SREGS, &sr) != 0) return "registers unavailable";
  snprintf(buf, sizeof buf, "rip 0x%llx rsp 0x%llx rflags 0x%llx cr0 0x%llx cr2 0x%llx cr3 0x%llx cr4 0x%llx efer 0x%llx",
           (unsigned long long)r.rip, (unsigned long long)r.rsp, (unsigned long long)r.rflags, (unsigned long long)sr.cr0,
           (unsigned long long)sr.cr2, (unsigned long long)sr.cr3, (unsigned long long)sr.cr4, (unsigned long long)sr.efer);
  return buf;
}

}  // namespace

uint64_t NowNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + ts.tv_nsec;
}

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
  if (cfg.ranges.empty() || cfg.ranges.size() > RAS_GUEST_MAX_RANGES) {
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
  if (!WriteSystemArea(&vm_, image.data(), image.size())) return false;
  auto* gc = reinterpret_cast<ras_guest_config*>(SlotOf(vm_, 0)->hva + RAS_GUEST_CONFIG);
  gc->magic = RAS_GUEST_MAGIC;
  gc->ncpus = static_cast<uint64_t>(cfg.vcpus);
  gc->seed = cfg.seed;
  gc->stop = 0;
  gc->nranges = cfg.ranges.size();
  for (size_t i = 0; i < cfg.ranges.size(); i++) gc->ranges[i] = cfg.ranges[i];
  vcpus_.resize(cfg.vcpus);
  for (int i = 0; i < cfg.vcpus; i++) {
    stats_.push_back(std::make_unique<VcpuStats>());
    if (!CreateVcpu(&vm_, i, &vcpus_[i])) return false;
  }
  last_pass_event_ns_.assign(cfg.vcpus, 0);
  return true;
}

bool Machine::Start(Sink sink) {
  sink_ = std::move(sink);
  InstallKickHandler();
  if (cfg_.api) {
    // Frames lost before this VM started are not news to it (its own are found by the guest's accesses).
    std::lock_guard<std::mutex> lock(lost_mu_);
    hugetlb_ras_lost buf[64];
    while (cfg_.api->next_lost(&lost_cursor_, buf, 64) > 0) {
    }
  }
  started_ = true;
  for (int i = 0; i < vcpus(); i++) threads_.emplace_back(&Machine::Loop, this, i);
  return true;
}

void Machine::RequestStop() {
  auto* gc = reinterpret_cast<ras_guest_config*>(SlotOf(vm_, 0)->hva + RAS_GUEST_CONFIG);
  __atomic_store_n(&gc->stop, 1, __ATOMIC_SEQ_CST);
}

void Machine::Kick() {
  quit_ = true;
  for (size_t i = 0; i < threads_.size(); i++) {
    if (stats_[i]->done.load()) continue;
    __atomic_store_n(&vcpus_[i].run->immediate_exit, 1, __ATOMIC_SEQ_CST);
    pthread_kill(threads_[i].native_handle(), KickSignal());
  }
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

void Machine::Loop(int i) {
  BlockAsyncSignals();
  sigbus::RegisterThread(i);
  Vcpu& v = vcpus_[i];
  VcpuStats& s = *stats_[i];
  std::vector<Pending> pending;  // machine checks waiting for the guest to finish the previous one
  uint64_t unresolved_in_a_row = 0;
  while (!quit_.load(std::memory_order_relaxed) && s.state.load() == kRunning) {
    if (!pending.empty() && !mce::InProgress(v.fd)) {
      InjectNow(i, pending.front());
      pending.erase(pending.begin());
    }
    s.runs++;
    int r = ioctl(v.fd, KVM_RUN, 0);
    if (r < 0) {
      int e = errno;
      if (e == EINTR || e == EAGAIN) {
        sigbus::Record rec;
        if (sigbus::Take(i, &rec)) {
          s.eintr_sigbus++;
          OnSigbus(i, rec.addr, &pending);
        } else {
          s.eintr++;  // the engine stalled this thread for a recoverable report, or a kick
        }
        continue;
      }
      if (e == EFAULT) {
        s.efault++;
        size_t before = pending.size();
        uint64_t inj = s.injected.load();
        OnEfault(i, &pending);
        if (pending.size() == before && s.injected.load() == inj) {
          s.efault_unresolved++;
          if (++unresolved_in_a_row > 20000) {
            Fatal(i, kError, "KVM_RUN keeps failing with EFAULT and the engine names no lost frame");
            break;
          }
          timespec ts = {0, 200000};
          nanosleep(&ts, nullptr);
        } else {
          unresolved_in_a_row = 0;
        }
        continue;
      }
      Fatal(i, kError, std::string("KVM_RUN: ") + strerror(e));
      break;
    }
    unresolved_in_a_row = 0;
    switch (v.run->exit_reason) {
      case KVM_EXIT_IO:
        s.pio++;
        if (!OnPio(i, &pending)) goto out;
        break;
      case KVM_EXIT_MMIO:
        OnMmio(i, &pending);
        break;
      case KVM_EXIT_HLT:
        if (s.state == kRunning) s.state = kHalted;
        goto out;
      case KVM_EXIT_INTR:
        s.eintr++;
        break;
      case KVM_EXIT_SHUTDOWN:
        Fatal(i, kFatal, "guest triple fault (KVM_EXIT_SHUTDOWN): " + DescribeVcpu(v.fd));
        goto out;
      case KVM_EXIT_FAIL_ENTRY:
        Fatal(i, kError, "KVM_EXIT_FAIL_ENTRY, reason 0x" + std::to_string(v.run->fail_entry.hardware_entry_failure_reason));
        goto out;
      case KVM_EXIT_INTERNAL_ERROR:
        Fatal(i, kError, "KVM_EXIT_INTERNAL_ERROR, suberror " + std::to_string(v.run->internal.suberror));
        goto out;
      default:
        Fatal(i, kError, "unexpected KVM exit " + std::to_string(v.run->exit_reason));
        goto out;
    }
  }
out:
  if (quit_.load() && s.state.load() == kRunning) s.state = kKicked;
  sigbus::UnregisterThread(i);
  s.done = true;
}

bool Machine::OnPio(int i, std::vector<Pending>*) {
  Vcpu& v = vcpus_[i];
  VcpuStats& s = *stats_[i];
  auto& io = v.run->io;
  uint8_t* data = reinterpret_cast<uint8_t*>(v.run) + io.data_offset;
  if (io.port != RAS_PORT_REPORT || io.direction != KVM_EXIT_IO_OUT || io.size != 4) {
    if (io.direction == KVM_EXIT_IO_IN) memset(data, 0xff, static_cast<size_t>(io.size) * io.count);
    return true;  // no such device
  }
  uint32_t val;
  memcpy(&val, data, 4);
  unsigned cpu = val & 0xff, box = (val >> 8) & 1;
  if (cpu != static_cast<unsigned>(i)) return true;
  volatile auto* mb = reinterpret_cast<volatile ras_guest_mailbox*>(SlotOf(vm_, 0)->hva + RAS_GUEST_MAILBOX) + 2 * cpu + box;
  Event e{kEvGuest, i, {mb->event, mb->a, mb->b, mb->c, mb->d, mb->e, mb->f, mb->g}, {}};
  bool go_on = true;
  switch (e.v[0]) {
    case RAS_EV_FILLED:
      s.filled = e.v[1];
      break;
    case RAS_EV_PASS: {
      s.passes = e.v[1];
      s.verified = e.v[2];
      s.wrong_bytes = e.v[3];
      uint64_t now = NowNs();
      if (now - last_pass_event_ns_[i] < static_cast<uint64_t>(cfg_.pass_event_ms) * 1000000ull) return true;
      last_pass_event_ns_[i] = now;
      break;
    }
    case RAS_EV_MCE:
      s.guest_mces++;
      break;
    case RAS_EV_WRONG:
      break;
    case RAS_EV_FATAL:
      s.state = kFatal;
      {
        std::lock_guard<std::mutex> lock(s.mu);
        s.error = "guest exception " + std::to_string(e.v[1]) + " at rip 0x" + std::to_string(e.v[2]);
      }
      go_on = false;
      break;
    case RAS_EV_BYE:
      s.passes = e.v[1];
      s.verified = e.v[2];
      s.wrong_bytes = e.v[3];
      s.state = kBye;
      go_on = false;
      break;
    default:
      break;
  }
  Post(std::move(e));
  return go_on;
}

hugetlb_ras_status Machine::Check(int i, int path, bool by_hva, uint64_t addr) {
  VcpuStats& s = *stats_[i];
  hugetlb_ras_status st = {};
  uint64_t t0 = NowNs();
  for (int tries = 0; tries < 100; tries++) {
    st = {};
    int rc = by_hva ? cfg_.api->check_hva(addr, cfg_.wait_ms, &st) : cfg_.api->check_gpa(addr, cfg_.wait_ms, &st);
    if (rc != 0) {
      Fatal(i, kError, "check_" + std::string(by_hva ? "hva" : "gpa") + " failed: " + std::to_string(rc));
      st.state = HUGETLB_RAS_NOT_RAM;
      return st;
    }
    if (st.state != HUGETLB_RAS_RECOVERING) break;
    s.recovering++;
  }
  uint64_t ns = NowNs() - t0;
  switch (st.state) {
    case HUGETLB_RAS_HEALTHY: s.healthy++; break;
    case HUGETLB_RAS_LOST: s.lost++; break;
    case HUGETLB_RAS_NOT_RAM: s.not_ram++; break;
    default: break;
  }
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
    MemoryFault mf;
    memcpy(&mf, &run->mmio, sizeof(mf));
    hugetlb_ras_status st = Check(i, kPathMemoryFault, false, mf.gpa);
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
