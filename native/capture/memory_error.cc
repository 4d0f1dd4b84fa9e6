#include "capture/memory_error.h"

#include <setjmp.h>

#include <atomic>

#include "capture/access.h"
#include "capture/chain.h"
#include "capture/stale.h"
#include "capture/wait.h"
#include "linux_compat.h"

namespace ras::signals::handler {

// Only the access's own fault ends a guarded access: a synchronous one (the kernel raised it for
// this thread's instruction: si_code > 0), never an action-optional report (it comes for memory
// nobody touched) nor one somebody sent (kill, tgkill, sigqueue: si_code <= 0), and only once the
// slot has its jump buffer. Everything else is chained or handled and the access goes on.
namespace {

bool OwnFault(const siginfo_t* si) { return si->si_code > 0 && !(si->si_signo == SIGBUS && si->si_code == BUS_MCEERR_AO); }

// How long a guarded accessor's handler may wait for its page (GuardedCopy sets it; other
// kSlotJump users, e.g. the pattern tools, get the default).
int WaitBudgetMs(const ThreadSlot* s) {
  int ms = s->wait_ms.load(std::memory_order_relaxed);
  return ms < 0 ? access::kGuardedWaitMs : ms;
}

}  // namespace

bool CanJump(ThreadSlot* s, const siginfo_t* si) {
  return s && s->mode.load(std::memory_order_acquire) == kSlotJump && OwnFault(si) &&
         s->jump.load(std::memory_order_acquire) != nullptr;
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

}  // namespace ras::signals::handler
