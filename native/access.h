// Touching guest memory from threads that must survive poison: guarded copies for the JS thread,
// and the deterministic test pattern shared by fill, verify and the vCPU threads.
#pragma once

#include <cstdint>

#include "registry.h"

namespace ras::access {

inline uint64_t PatternWord(uint64_t seed, uint64_t offset) {
  uint64_t z = seed + offset * 0x9E3779B97F4A7C15ull + 0x632BE59BD9B4E019ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

struct Fault {
  uintptr_t addr = 0;
  int signal = 0;  // SIGBUS / SIGSEGV, or one of the kFault* below (no signal: a wait ended)
  int code = 0;
};
// A guarded access to a huge page under recovery waits for it, at most this long.
constexpr int kGuardedWaitMs = 10000;
constexpr int kFaultNoSlot = -1;         // no thread slot was free
constexpr int kFaultWaitTimeout = -2;    // the huge page was still being recovered after kGuardedWaitMs
constexpr int kFaultEnginePaused = -3;   // the huge page waits for a paused engine

// Waits (bounded, as a guarded access does) while a huge page of [start, start+len) is pending or
// being recovered. false: it gave up (*fault says why and where).
bool WaitRecovered(Region& r, uintptr_t start, uint64_t len, Fault* fault);

// Copy with a poison guard: returns false (and the fault) instead of dying.
bool GuardedCopy(void* dst, const void* src, uint64_t len, Fault* fault);

struct Verify {
  bool ok = true;  // false: no thread slot was free
  uint64_t checked = 0;
  uint64_t wrong = 0;
  int64_t first_wrong = -1;
  uint64_t unreadable_count = 0;  // 4 KiB subpages that could not be read
};
// Pattern over [start, start+len): `base` is the region offset of `start`. `unreadable` receives
// region offsets of subpages that faulted (capped by `max_unreadable`).
// The first address of [start, start+len) known to be unusable (a huge page being handled or lost,
// or a lost subpage of a split one), or 0. Lets a write refuse before it changes anything.
uintptr_t FirstKnownUnusable(Region& r, uintptr_t start, uint64_t len);

void FillPattern(char* start, uint64_t len, uint64_t base, uint64_t seed);
// FillPattern over the whole region behind a poison guard; false (and the fault) instead of dying.
bool GuardedFillPattern(Region& r, uint64_t seed, Fault* fault);
Verify VerifyPattern(Region& r, uint64_t seed, uint64_t* unreadable, uint64_t max_unreadable);

}  // namespace ras::access
