#include "testing/pattern.h"

#include <csetjmp>

namespace ras::pattern {

void FillPattern(char* start, uint64_t len, uint64_t base, uint64_t seed) {
  uint64_t* w = reinterpret_cast<uint64_t*>(start);
  for (uint64_t i = 0; i < len / 8; i++) w[i] = PatternWord(seed, base + i * 8);
}

namespace {
// One subpage against the pattern; a plain function so nothing of it lives across a siglongjmp.
void CheckSubpage(const uint64_t* w, uint64_t base, uint64_t seed, volatile uint64_t* wrong, volatile int64_t* first) {
  for (uint64_t i = 0; i < kSubpage / 8; i++) {
    uint64_t x = w[i] ^ PatternWord(seed, base + i * 8);
    if (!x) continue;
    for (int b = 0; b < 8; b++) {
      if (((x >> (8 * b)) & 0xff) == 0) continue;
      if (*first < 0) *first = static_cast<int64_t>(base + i * 8 + static_cast<uint64_t>(b));
      *wrong = *wrong + 1;
    }
  }
}
}  // namespace

bool GuardedFillPattern(Region& r, uint64_t seed, access::Fault* fault) {
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
  FillPattern(reinterpret_cast<char*>(r.start), r.end - r.start, 0, seed);
  ReleaseSlot(slot);
  return true;
}

Verify VerifyPattern(Region& r, uint64_t seed, uint64_t* unreadable, uint64_t max_unreadable) {
  // Everything that changes after sigsetjmp is volatile: a siglongjmp would lose it in registers.
  volatile uint64_t off = 0, checked = 0, wrong = 0, bad = 0;
  volatile int64_t first = -1;
  sigjmp_buf jb;
  ThreadSlot* slot = ClaimSlot(kSlotJump);
  if (!slot) {
    Verify none;
    none.ok = false;
    return none;
  }
  slot->jump = &jb;
  // Walk 4 KiB at a time; a fault skips that subpage (or the whole huge page while it is not
  // split yet) and the walk resumes behind it.
  uint64_t size = r.end - r.start;
  if (sigsetjmp(jb, 1) != 0) {
    uintptr_t a = slot->fault_addr.load();
    uint32_t page = r.PageIndex(a);
    uint32_t st = StateOf(r.Word(page).load());
    uint64_t sub_off = (a & ~(kSubpage - 1)) - r.start;
    uint64_t skip_to = sub_off + kSubpage;
    if (st != kSplit) skip_to = (static_cast<uint64_t>(page) + 1) << r.huge_shift;
    for (uint64_t s = sub_off; s < skip_to; s += kSubpage) {
      if (bad < max_unreadable) unreadable[bad] = s;
      bad = bad + 1;
    }
    off = skip_to;
  }
  while (off < size) {
    CheckSubpage(reinterpret_cast<const uint64_t*>(r.start + off), off, seed, &wrong, &first);
    checked = checked + kSubpage;
    off = off + kSubpage;
  }
  ReleaseSlot(slot);
  Verify v;
  v.checked = checked;
  v.wrong = wrong;
  v.first_wrong = first;
  v.unreadable_count = bad;
  return v;
}

}  // namespace ras::pattern
