#include "capture/access.h"

#include <errno.h>
#include <signal.h>
#include <time.h>

#include <algorithm>
#include <csetjmp>
#include <cstring>

#include "linux_compat.h"

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

int CopyAvailable(Region& r, uintptr_t hva, void* buf, uint64_t len, uint64_t* lost, bool to, int timeout_ms,
                  Fault* why) {
  Fault ignored;
  if (!why) why = &ignored;
  auto timed_out = [&](uintptr_t at) {
    bool paused = g_paused.load(std::memory_order_acquire);
    *why = {at, paused ? kFaultEnginePaused : kFaultWaitTimeout, 0};
    return -ETIMEDOUT;
  };
  uint64_t deadline = MonotonicNs() + static_cast<uint64_t>(timeout_ms < 0 ? 0 : timeout_ms) * 1000000ull;
  auto left_ms = [&]() -> int {
    uint64_t now = MonotonicNs();
    return now >= deadline ? 0 : static_cast<int>((deadline - now + 999999ull) / 1000000ull);
  };
  const uintptr_t end = hva + len;
  const uintptr_t frame0 = hva & ~(kSubpage - 1);
  char* b = static_cast<char*>(buf);
  // A lost frame: its bit, and zeros in the buffer when copying out.
  auto skip = [&](uintptr_t a, uintptr_t to_addr) {
    uint64_t i = ((a & ~(kSubpage - 1)) - frame0) / kSubpage;
    lost[i / 64] |= 1ull << (i % 64);
    if (!to) memset(b + (a - hva), 0, to_addr - a);
  };
  for (uintptr_t a = hva; a < end;) {
    if (r.removed.load(std::memory_order_acquire)) return -EINVAL;
    uint32_t page = r.PageIndex(a);
    uintptr_t page_end = std::min<uintptr_t>(r.PageAddress(page) + r.huge_size, end);
    std::atomic<uint32_t>& w = r.Word(page);
    uint32_t word = w.load(std::memory_order_acquire);
    uint32_t st = StateOf(word);
    if (st == kPending || st == kRecovering) {
      int ms = left_ms();
      if (ms == 0 || (g_paused.load(std::memory_order_acquire) && Gettid() == g_main_tid)) return timed_out(a);
      FutexWait(&w, word, ms < 20 ? ms : 20);
      continue;
    }
    if (st == kLost) {
      for (uintptr_t f = a; f < page_end; f = (f & ~(kSubpage - 1)) + kSubpage)
        skip(f, std::min<uintptr_t>((f & ~(kSubpage - 1)) + kSubpage, page_end));
      a = page_end;
      continue;
    }
    // Normal or split: copy each run of frames not known to be lost in one guarded copy.
    bool split = st == kSplit;
    while (a < page_end) {
      uintptr_t next = std::min<uintptr_t>((a & ~(kSubpage - 1)) + kSubpage, page_end);
      if (split && r.SubpageLost(a)) {
        skip(a, next);
        a = next;
        continue;
      }
      uintptr_t stop = next;
      while (stop < page_end && !(split && r.SubpageLost(stop))) stop = std::min<uintptr_t>(stop + kSubpage, page_end);
      Fault f;
      void* dst = to ? reinterpret_cast<void*>(a) : static_cast<void*>(b + (a - hva));
      const void* src = to ? static_cast<const void*>(b + (a - hva)) : reinterpret_cast<const void*>(a);
      if (GuardedCopy(dst, src, stop - a, &f, left_ms())) {
        a = stop;
        continue;
      }
      // Not a memory error: nothing the engine can recover or skip.
      if (f.signal > 0 && !(f.signal == SIGBUS && (f.code == BUS_MCEERR_AR || f.code == BUS_MCEERR_AO))) {
        *why = f;
        return -EFAULT;
      }
      // A memory error (now recorded), a wait that ended, no free slot: look at the page again
      // from here (the part of the run before the fault is simply copied again).
      if (left_ms() == 0) {
        uint32_t now_st = StateOf(w.load(std::memory_order_acquire));
        if (now_st == kPending || now_st == kRecovering || f.signal == kFaultNoSlot) return timed_out(a);
      }
      if (f.signal == kFaultNoSlot) {
        struct timespec ts = {0, 1000000L};
        nanosleep(&ts, nullptr);
      }
      break;
    }
  }
  return 0;
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
