#include "access.h"

#include <csetjmp>
#include <cstring>

namespace ras::access {

bool GuardedCopy(void* dst, const void* src, uint64_t len, Fault* fault) {
  sigjmp_buf jb;
  ThreadSlot* slot = ClaimSlot(kSlotJump);
  if (!slot) {
    fault->signal = -1;
    return false;
  }
  slot->jump = &jb;
  if (sigsetjmp(jb, 1) != 0) {
    *fault = {slot->fault_addr.load(), slot->fault_signal.load(), slot->fault_code.load()};
    ReleaseSlot(slot);
    return false;
  }
  memcpy(dst, src, len);
  ReleaseSlot(slot);
  return true;
}

void FillPattern(char* start, uint64_t len, uint64_t base, uint64_t seed) {
  uint64_t* w = reinterpret_cast<uint64_t*>(start);
  for (uint64_t i = 0; i < len / 8; i++) w[i] = PatternWord(seed, base + i * 8);
}

Verify VerifyPattern(Region& r, uint64_t seed, uint64_t* unreadable, uint64_t max_unreadable) {
  Verify v;
  sigjmp_buf jb;
  ThreadSlot* slot = ClaimSlot(kSlotJump);
  if (!slot) return v;
  slot->jump = &jb;
  // Walk 4 KiB at a time; a fault skips that subpage (or the whole huge page while it is not
  // split yet) and the walk resumes behind it.
  volatile uint64_t off = 0;
  uint64_t size = r.end - r.start;
  if (sigsetjmp(jb, 1) != 0) {
    uintptr_t a = slot->fault_addr.load();
    uint32_t page = r.PageIndex(a);
    uint32_t st = StateOf(r.Word(page).load());
    uint64_t sub_off = (a & ~(kSubpage - 1)) - r.start;
    uint64_t skip_to = sub_off + kSubpage;
    if (st != kSplit) skip_to = (static_cast<uint64_t>(page) + 1) << r.huge_shift;
    for (uint64_t s = sub_off; s < skip_to; s += kSubpage) {
      if (v.unreadable_count < max_unreadable) unreadable[v.unreadable_count] = s;
      v.unreadable_count++;
    }
    off = skip_to;
  }
  while (off < size) {
    const uint64_t* w = reinterpret_cast<const uint64_t*>(r.start + off);
    uint64_t base = off;
    for (uint64_t i = 0; i < kSubpage / 8; i++) {
      uint64_t x = w[i] ^ PatternWord(seed, base + i * 8);
      if (x) {
        for (int b = 0; b < 8; b++) {
          if (((x >> (8 * b)) & 0xff) == 0) continue;
          if (v.first_wrong < 0) v.first_wrong = static_cast<int64_t>(base + i * 8 + static_cast<uint64_t>(b));
          v.wrong++;
        }
      }
    }
    v.checked += kSubpage;
    off = off + kSubpage;
  }
  ReleaseSlot(slot);
  return v;
}

}  // namespace ras::access
