#include "capture/signals.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>

#include "capture/access.h"
#include "capture/chain.h"
#include "capture/stale.h"
#include "capture/wait.h"
#include "linux_compat.h"
#include "state/state.h"

namespace ras::signals {

namespace {

std::atomic<int> g_refs{0};
std::atomic<int> g_passthrough{1};  // set while no engine is open: every signal is chained
std::atomic<SimulatedFaultLsb> g_sim_hook{nullptr};
bool g_installed = false;  // our handlers are in the chain (changed only on the JS thread)
std::atomic<uint64_t> g_hold_delay_ns{0};  // tests only: see SetHoldDelayForTests
std::atomic<uint64_t> g_hold_until_ns{0};  // tests only: see SetHoldUntilForTests

// Only the access's own fault ends a guarded access: a synchronous one (the kernel raised it for
// this thread's instruction: si_code > 0), never an action-optional report (it comes for memory
// nobody touched) nor one somebody sent (kill, tgkill, sigqueue: si_code <= 0), and only once the
// slot has its jump buffer. Everything else is chained or handled and the access goes on.
bool OwnFault(const siginfo_t* si) { return si->si_code > 0 && !(si->si_signo == SIGBUS && si->si_code == BUS_MCEERR_AO); }

bool CanJump(ThreadSlot* s, const siginfo_t* si) {
  return s && s->mode.load(std::memory_order_acquire) == kSlotJump && OwnFault(si) &&
         s->jump.load(std::memory_order_acquire) != nullptr;
}

// How long a guarded accessor's handler may wait for its page (GuardedCopy sets it; other
// kSlotJump users, e.g. the pattern tools, get the default).
int WaitBudgetMs(const ThreadSlot* s) {
  int ms = s->wait_ms.load(std::memory_order_relaxed);
  return ms < 0 ? access::kGuardedWaitMs : ms;
}

// Leaves the handler: lets go of the region first (nothing after a siglongjmp would). Callers
// made sure the slot has its jump buffer; without one it does nothing rather than jump through null.
void Jump(RegionRef* ref, ThreadSlot* s, uintptr_t addr, int sig, int code) {
  sigjmp_buf* jb = s->jump.load(std::memory_order_acquire);
  if (!jb) return;
  if (ref) ref->Release();
  s->fault_addr.store(addr, std::memory_order_relaxed);
  s->fault_signal.store(sig, std::memory_order_relaxed);
  s->fault_code.store(code, std::memory_order_relaxed);
  siglongjmp(*jb, 1);
}

// `ref` holds the region: every way out of here lets go of it (return, Jump, Chain).
void HandleMemoryError(RegionRef& ref, uintptr_t addr, int code, int lsb, ThreadSlot* slot, int tid, int sig,
                       siginfo_t* si, void* uc) {
  Region& r = *ref;
  uint32_t region_slot = ref.slot();
  uint64_t t0 = MonotonicNs();
  uint32_t page = r.PageIndex(addr);
  std::atomic<uint32_t>& w = r.Word(page);
  uint32_t flags = 0;
  bool lost_now = false;
  uint32_t st = kNormal;
  for (;;) {
    uint32_t word = w.load(std::memory_order_acquire);
    st = StateOf(word);
    if (st == kNormal) {
      // First report for this huge page: it is now pending; later reports are merged into it.
      if (!MarkPending(w, word)) continue;
    } else if (st == kSplit) {
      if (r.SubpageLost(addr)) {
        flags = kReportAlreadyLost;
        lost_now = true;
      } else if (stale::KernelCanRead(addr) && stale::FirstUnexplainedFault(tid, addr, word)) {
        // Stale, whatever its lsb: KVM reports with lsb 12 and the address the guest touched
        // first, and delivers when the thread leaves KVM_RUN, maybe after the split. The frame
        // is healthy: the thread retries (the same fault twice in a row is believed).
        GlobalCounters().stale.fetch_add(1, std::memory_order_relaxed);
        return;
      } else {
        // The kernel confirms it: this 4 KiB of the ordinary pages is gone. Only the thread whose
        // mark was the first reports it new (another one's handler may have marked it meanwhile).
        flags = r.MarkSubpageLost(addr) ? kReportNewSubpageLoss : kReportAlreadyLost;
        lost_now = true;
      }
    } else if (st == kLost) {
      flags = kReportAlreadyLost;
      lost_now = true;
    }
    break;
  }
  Report rep = {addr, t0, region_slot, r.id, code, lsb, tid, flags, st};
  if (!EnqueueReport(rep) && (st == kNormal || (flags & kReportNewSubpageLoss))) {
    // This handler made the page Pending, or marked a subpage lost, and its report is dropped: flag
    // the region, so a lane finds it by its state instead (region first, then the global flag).
    r.attention.store(1);
    g_attention.store(1);
  }
  WakeWorker();

  if (code == BUS_MCEERR_AO) return;  // asynchronous: nothing faulted, nobody to stall
  int mode = slot ? slot->mode.load(std::memory_order_acquire) : kSlotFree;
  // A slot whose jump buffer is not set yet cannot have faulted: as a thread without a slot.
  if ((mode == kSlotJump || mode == kSlotVcpu) && !slot->jump.load(std::memory_order_acquire)) mode = kSlotFree;
  switch (mode) {
    case kSlotReturn:
      return;
    case kSlotJump:
      // Device emulation reading guest memory must not fail an I/O for data that is not lost:
      // wait as a vCPU does (bounded; never for a paused engine), then retry the access.
      if (!lost_now) {
        if (g_paused.load(std::memory_order_acquire)) Jump(&ref, slot, addr, access::kFaultEnginePaused, code);
        if (!wait::WaitHandledFor(r, page, WaitBudgetMs(slot))) Jump(&ref, slot, addr, access::kFaultWaitTimeout, code);
        return;
      }
      Jump(&ref, slot, addr, SIGBUS, code);
      return;  // not reached: the slot has its jump buffer
    case kSlotVcpu:
      if (lost_now) Jump(&ref, slot, addr, SIGBUS, code);  // the vCPU reports an MCE to its guest
      if (!wait::WaitHandled(r, page, slot->vcpu)) Jump(&ref, slot, addr, SIGBUS, code);  // told to stop
      if (slot->vcpu) {
        uint32_t n = slot->vcpu->stalls.load(std::memory_order_relaxed);
        if (n < kMaxStalls) {
          slot->vcpu->stall[n] = {addr, MonotonicNs() - t0, t0, 0};
          slot->vcpu->stalls.store(n + 1, std::memory_order_release);
        }
      }
      return;
    default:
      break;
  }
  // A thread we know nothing about. If the memory is gone for good nobody can report it to the
  // guest: fail as the process would without us. The JS thread must not wait for a paused engine.
  // This is how a VMM's own vCPU threads (in KVM_RUN) learn of a lost frame: its handler, with the
  // kernel's siginfo and ucontext.
  if (lost_now || (tid == g_main_tid && g_paused.load(std::memory_order_acquire))) {
    ref.Release();
    Chain(sig, si, uc);
    return;
  }
  wait::WaitHandled(r, page, nullptr);
}

void OnSigbus(int sig, siginfo_t* si, void* uc) {
  int saved_errno = errno;
  // Sent by a process (kill, tgkill, sigqueue): never a memory error, never a guarded access's fault.
  if (g_passthrough.load(std::memory_order_acquire) || si->si_code <= 0) {
    Chain(sig, si, uc);
    errno = saved_errno;
    return;
  }
  uintptr_t addr = reinterpret_cast<uintptr_t>(si->si_addr);
  bool mce = si->si_code == BUS_MCEERR_AR || si->si_code == BUS_MCEERR_AO;
  int tid = Gettid();
  ThreadSlot* slot = FindSlot(tid);
  // A recovery thread poisoning memory itself (MADV_HWPOISON on a lost subpage) gets the kernel's
  // SIGBUS during that call (Linux >= 6.12): it is the engine's own doing, not a new error.
  if (mce && slot && slot->mode.load() == kSlotSelfPoison) {
    errno = saved_errno;
    return;
  }
  RegionRef r = RegionRef::Find(addr);
  if (!r) {
    // A guarded accessor gets an error, never the process's death (its region may be going away).
    if (CanJump(slot, si)) Jump(nullptr, slot, addr, sig, si->si_code);
    Chain(sig, si, uc);
    errno = saved_errno;
    return;
  }
  if (uint64_t hold = g_hold_delay_ns.load(std::memory_order_relaxed))
    for (uint64_t until = MonotonicNs() + hold; MonotonicNs() < until;) {
    }
  if (uint64_t until = g_hold_until_ns.load(std::memory_order_relaxed))
    while (MonotonicNs() < until) {
    }
  int code = si->si_code;
  int lsb = si->si_addr_lsb;
  if (!mce) {
    // A poison marker on a kernel without CONFIG_MEMORY_FAILURE raises BUS_ADRERR: in a lost
    // subpage it is the engine's own guard, a memory error.
    uint32_t st = StateOf(r->Word(r->PageIndex(addr)).load(std::memory_order_acquire));
    if (st == kSplit && r->SubpageLost(addr)) {
      code = BUS_MCEERR_AR;
      lsb = kSubpageShift;
    } else {
      // Not a memory error (e.g. the file was truncated under the region): a guarded accessor
      // gets an error, everybody else dies as before.
      if (CanJump(slot, si)) Jump(&r, slot, addr, sig, si->si_code);
      r.Release();
      Chain(sig, si, uc);
      errno = saved_errno;
      return;
    }
  }
  HandleMemoryError(r, addr, code, lsb, slot, tid, sig, si, uc);
  errno = saved_errno;
}

void OnSigsegv(int sig, siginfo_t* si, void* uc) {
  int saved_errno = errno;
  // Sent by a process: not a fault, whatever si_addr happens to hold.
  if (g_passthrough.load(std::memory_order_acquire) || si->si_code <= 0) {
    Chain(sig, si, uc);
    errno = saved_errno;
    return;
  }
  uintptr_t addr = reinterpret_cast<uintptr_t>(si->si_addr);
  RegionRef r = RegionRef::Find(addr);
  if (!r) {
    ThreadSlot* slot = FindSlot(Gettid());
    if (CanJump(slot, si)) Jump(nullptr, slot, addr, sig, si->si_code);
    Chain(sig, si, uc);
    errno = saved_errno;
    return;
  }
  uint32_t page = r->PageIndex(addr);
  uint32_t word = r->Word(page).load(std::memory_order_acquire);
  uint32_t st = StateOf(word);
  SimulatedFaultLsb sim = g_sim_hook.load(std::memory_order_acquire);
  int lsb = 0;
  switch (st) {
    case kPending:
    case kRecovering:
    case kLost:
      // The huge page is inaccessible while it is handled (or for good): same fault as the poison.
      lsb = static_cast<int>(r->huge_shift);
      break;
    case kSplit:
      if (r->SubpageLost(addr))
        lsb = kSubpageShift;  // a guarded lost subpage: the engine turns the fault into a report
      else if (sim)
        lsb = sim(addr, kSubpageShift);
      break;
    default:
      if (sim) lsb = sim(addr, 63);
      break;
  }
  if (lsb == 0) {
    int tid = Gettid();
    if (stale::FirstUnexplainedFault(tid, addr, word)) {
      errno = saved_errno;
      return;  // re-execute: a stale fault now succeeds
    }
    ThreadSlot* slot = FindSlot(tid);
    if (CanJump(slot, si)) Jump(&r, slot, addr, sig, si->si_code);
    r.Release();
    Chain(sig, si, uc);
    errno = saved_errno;
    return;
  }
  // Handle it as the memory error it stands for. A handler we chain to gets the siginfo the
  // kernel gives for hardware poison there, and this fault's own ucontext.
  siginfo_t bus = {};
  bus.si_signo = SIGBUS;
  bus.si_code = BUS_MCEERR_AR;
  bus.si_addr = si->si_addr;
  bus.si_addr_lsb = static_cast<short>(lsb);
  int tid = Gettid();
  HandleMemoryError(r, addr, BUS_MCEERR_AR, lsb, FindSlot(tid), tid, SIGBUS, &bus, uc);
  errno = saved_errno;
}

}  // namespace

void RaiseMemoryError(uintptr_t addr, int code, int lsb) {
  siginfo_t si = {};
  si.si_signo = SIGBUS;
  si.si_code = code;
  si.si_addr = reinterpret_cast<void*>(addr);
  si.si_addr_lsb = static_cast<short>(lsb);
  syscall(SYS_rt_tgsigqueueinfo, getpid(), Gettid(), SIGBUS, &si);
}

void SetSimulatedFaultHook(SimulatedFaultLsb hook) { g_sim_hook.store(hook); }

void SetHoldDelayForTests(uint64_t ns) { g_hold_delay_ns.store(ns); }

void SetHoldUntilForTests(uint64_t monotonic_ns) { g_hold_until_ns.store(monotonic_ns); }

bool Install() {
  if (g_refs.fetch_add(1) > 0) return true;
  if (!g_installed) {
    // The previous handlers are read before ours go in: from the moment ours is installed, a
    // signal on another thread may be chained to them.
    if (sigaction(SIGBUS, nullptr, &g_prev_bus) != 0 || sigaction(SIGSEGV, nullptr, &g_prev_segv) != 0) {
      g_refs.fetch_sub(1);
      return false;
    }
    // Each handler blocks the other's signal: a handler that waits (a guarded accessor, a vCPU)
    // must not be entered again by the other one and left by a jump past its own frame.
    struct sigaction sa = {};
    sa.sa_sigaction = OnSigbus;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaddset(&sa.sa_mask, SIGSEGV);
    if (sigaction(SIGBUS, &sa, nullptr) != 0) {
      g_refs.fetch_sub(1);
      return false;
    }
    struct sigaction sv = {};
    sv.sa_sigaction = OnSigsegv;
    sv.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESTART;
    sigemptyset(&sv.sa_mask);
    sigaddset(&sv.sa_mask, SIGBUS);
    if (sigaction(SIGSEGV, &sv, nullptr) != 0) {
      int e = errno;
      sigaction(SIGBUS, &g_prev_bus, nullptr);
      g_refs.fetch_sub(1);
      errno = e;
      return false;
    }
    g_installed = true;
  }
  g_passthrough.store(0);
  return true;
}

void Uninstall() {
  if (g_refs.load() <= 0 || g_refs.fetch_sub(1) != 1) return;
  g_passthrough.store(1);
  // Put the previous handlers back if nobody installed another one after us; otherwise ours stay
  // in the chain but pass everything through.
  struct sigaction bus, segv;
  if (sigaction(SIGBUS, nullptr, &bus) != 0 || sigaction(SIGSEGV, nullptr, &segv) != 0) return;
  bool bus_ours = (bus.sa_flags & SA_SIGINFO) && bus.sa_sigaction == OnSigbus;
  bool segv_ours = (segv.sa_flags & SA_SIGINFO) && segv.sa_sigaction == OnSigsegv;
  if (bus_ours && segv_ours) {
    sigaction(SIGBUS, &g_prev_bus, nullptr);
    sigaction(SIGSEGV, &g_prev_segv, nullptr);
    g_installed = false;
  }
}

}  // namespace ras::signals
