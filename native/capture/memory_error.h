// The SIGBUS / SIGSEGV handlers' common part (signals.cc decides what a signal is; this handles it
// as a memory error): the huge page's state word moves (Normal -> Pending, a split page's subpage
// marked lost), the report is queued for the lanes, and the faulting thread waits for its page,
// jumps out of a guarded access, or is chained as it would be without us. Signal context only:
// the rules of signals.h (lock-free state, raw syscalls, siglongjmp; nothing else).
#pragma once

#include <signal.h>

#include <cstdint>

#include "state/state.h"

namespace ras::signals::handler {

// A synchronous fault of this thread's own instruction that a guarded access may end (signals.cc).
bool CanJump(ThreadSlot* s, const siginfo_t* si);
// Leaves the handler through the slot's jump buffer, letting go of `ref` first (nullptr: none).
void Jump(RegionRef* ref, ThreadSlot* s, uintptr_t addr, int sig, int code);
// `ref` holds the region: every way out of here lets go of it (return, Jump, Chain).
void HandleMemoryError(RegionRef& ref, uintptr_t addr, int code, int lsb, ThreadSlot* slot, int tid, int sig,
                       siginfo_t* si, void* uc);

}  // namespace ras::signals::handler
