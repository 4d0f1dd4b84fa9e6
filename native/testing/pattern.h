// Test-only: the deterministic pattern that fillPattern writes and verifyPattern and the vCPU load
// threads check, so a test can tell recovered bytes from wrong ones.
#pragma once

#include <cstdint>

#include "capture/access.h"
#include "state/state.h"

namespace ras::pattern {

inline uint64_t PatternWord(uint64_t seed, uint64_t offset) {
  uint64_t z = seed + offset * 0x9E3779B97F4A7C15ull + 0x632BE59BD9B4E019ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

void FillPattern(char* start, uint64_t len, uint64_t base, uint64_t seed);
// FillPattern over the whole region behind a poison guard; false (and the fault) instead of dying.
bool GuardedFillPattern(Region& r, uint64_t seed, access::Fault* fault);

struct Verify {
  bool ok = true;  // false: no thread slot was free
  uint64_t checked = 0;
  uint64_t wrong = 0;
  int64_t first_wrong = -1;
  uint64_t unreadable_count = 0;  // 4 KiB subpages that could not be read
};
// The pattern over the whole region, behind a poison guard. `unreadable` receives region offsets
// of subpages that faulted (capped by `max_unreadable`).
Verify VerifyPattern(Region& r, uint64_t seed, uint64_t* unreadable, uint64_t max_unreadable);

}  // namespace ras::pattern
