#include "capture/signals.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>

#include "capture/chain.h"
#include "capture/memory_error.h"
#include "capture/stale.h"
#include "linux_compat.h"
#include "state/state.h"

namespace ras::signals {

namespace {

using handler::CanJump;
using handler::HandleMemoryError;
using handler::Jump;

std::atomic<int> g_refs{0};
std::atomic<int> g_passthrough{1};  // set while no engine is open: every signal is chained
std::atomic<SimulatedFaultLsb> g_sim_hook{nullptr};
bool g_installed = false;  // our handlers are in the chain (changed only on the JS thread)
std::atomic<uint64_t> g_hold_delay_ns{0};  // tests only: see SetHoldDelayForTests
std::atomic<uint64_t> g_hold_until_ns{0};  // tests only: see SetHoldUntilForTests

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
    // Recovering too: the eager path marks the lost bits and puts the markers in the block before
    // its swap, and publishes Split only after it; a thread touching a lost subpage in between met
    // BUS_ADRERR with the page still Recovering and was chained to its death (the unprivileged
    // `npm test` crash: a vCPU load thread on the lost subpage of recovery.test's load case).
    uint32_t st = StateOf(r->Word(r->PageIndex(addr)).load(std::memory_order_acquire));
    if ((st == kSplit || st == kRecovering) && r->SubpageLost(addr)) {
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
