#include "capture/access.h"

#include <csetjmp>
#include <cstring>

namespace ras::access {

bool GuardedCopy(void* dst, const void* src, uint64_t len, Fault* fault, int wait_ms) {
  if (len == 0) return true;  // an empty Buffer's data may be null: memcpy(NULL, ..., 0) is UB
  sigjmp_buf jb;
  ThreadSlot* slot = ClaimSlot(kSlotJump);
  if (!slot) {
    fault->signal = -1;
    return false;
  }
  if (sigsetjmp(jb, 1) != 0) {
    *fault = {slot->fault_addr.load(), slot->fault_signal.load(), slot->fault_code.load()};
    ReleaseSlot(slot);
    return false;
  }
  slot->wait_ms.store(wait_ms < 0 ? 0 : wait_ms, std::memory_order_relaxed);
  slot->jump.store(&jb, std::memory_order_release);  // only now is jb a place to jump to
  memcpy(dst, src, len);
  ReleaseSlot(slot);
  return true;
}

bool WaitRecovered(Region& r, uintptr_t start, uint64_t len, Fault* fault) {
  uintptr_t end = start + len;
  for (uintptr_t a = start; a < end;) {
    uint32_t page = r.PageIndex(a);
    std::atomic<uint32_t>& w = r.Word(page);
    uint64_t deadline = MonotonicNs() + static_cast<uint64_t>(kGuardedWaitMs) * 1000000ull;
    for (;;) {
      uint32_t word = w.load(std::memory_order_acquire);
      uint32_t st = StateOf(word);
      if (st != kPending && st != kRecovering) break;
      if (g_paused.load(std::memory_order_acquire) || MonotonicNs() >= deadline) {
        *fault = {a, g_paused.load() ? kFaultEnginePaused : kFaultWaitTimeout, 0};
        return false;
      }
      FutexWait(&w, word, 20);
    }
    a = r.PageAddress(page) + r.huge_size;
  }
  return true;
}

uintptr_t FirstKnownUnusable(Region& r, uintptr_t start, uint64_t len) {
  uintptr_t end = start + len;
  for (uintptr_t a = start; a < end;) {
    uint32_t page = r.PageIndex(a);
    uintptr_t page_end = r.PageAddress(page) + r.huge_size;
    uint32_t st = StateOf(r.Word(page).load(std::memory_order_acquire));
    if (st == kPending || st == kRecovering || st == kLost) return a;
    if (st == kSplit) {
      for (uintptr_t s = a; s < end && s < page_end; s = (s & ~(kSubpage - 1)) + kSubpage)
        if (r.SubpageLost(s)) return s;
    }
    a = page_end;
  }
  return 0;
}

}  // namespace ras::access
