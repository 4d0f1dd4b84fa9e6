// Guarded access: copies to and from guest memory by a thread that must survive poison (the JS
// thread's read/write, the poison injection). The thread claims a kSlotJump slot; the handler in
// capture/signals.cc siglongjmps back here on a fault and the copy returns the fault instead.
#pragma once

#include <cstdint>

#include "state/state.h"

namespace ras::access {

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

// Copy with a poison guard: returns false (and the fault) instead of dying. A fault on a huge page
// under recovery waits for it at most `wait_ms` (then kFaultWaitTimeout), as WaitRecovered does.
bool GuardedCopy(void* dst, const void* src, uint64_t len, Fault* fault, int wait_ms = kGuardedWaitMs);

// Copies [hva, hva+len) of `r` out of (to == false) or into (to == true) `buf` without faulting:
// a lost frame (4 KiB, or every frame of a whole lost huge page) is skipped, its bit set in `lost`
// (one bit per 4 KiB frame, frame 0 the one holding hva; the caller zeroes it) and, copying out,
// zeros put in its place. A huge page under recovery is waited for; the whole call waits at most
// `timeout_ms`. Returns 0, -ETIMEDOUT (frames before the page it waited for are done), -EFAULT (a
// fault that is not a memory error) or -EINVAL (the region went away meanwhile). Not signal-safe.
// The engine's JS thread never waits for a paused engine here (-ETIMEDOUT at once). `why`, if
// given, says where and why on -ETIMEDOUT (kFaultWaitTimeout / kFaultEnginePaused) and -EFAULT.
int CopyAvailable(Region& r, uintptr_t hva, void* buf, uint64_t len, uint64_t* lost, bool to, int timeout_ms,
                  Fault* why = nullptr);

// The first address of [start, start+len) known to be unusable (a huge page being handled or lost,
// or a lost subpage of a split one), or 0. Lets a write refuse before it changes anything.
uintptr_t FirstKnownUnusable(Region& r, uintptr_t start, uint64_t len);

}  // namespace ras::access
