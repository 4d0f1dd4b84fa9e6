// Capture, the first stage: SIGBUS / SIGSEGV handlers turn a memory error into a report in the
// queue (state/reports.h); the faulting thread then waits for the lanes, jumps out of a guarded
// access, or dies as it would without us. The rule: the handlers only touch the lock-free state
// (state/), raw syscalls and siglongjmp: no malloc, no locks, no V8. Everything that is not ours is
// chained to the previous handler (Node itself uses SIGSEGV for WebAssembly traps).
#pragma once

#include <cstdint>

namespace ras::signals {

bool Install();    // refcounted; false if sigaction failed (errno set)
void Uninstall();  // restores the previous handlers when ours are still the installed ones

// Send the calling thread a memory-error SIGBUS with a full siginfo, as the kernel does.
void RaiseMemoryError(uintptr_t addr, int code, int lsb);

// The simulation tells the SIGSEGV handler which PROT_NONE addresses stand for poisoned memory.
// Returns the lsb to report, or 0. Must be async-signal-safe.
using SimulatedFaultLsb = int (*)(uintptr_t addr, int max_lsb);
void SetSimulatedFaultHook(SimulatedFaultLsb hook);

// Tests: the SIGBUS handler spins this long right after it found the region, as a thread preempted
// there would (region removal and slot reuse must not hurt it). 0: off.
void SetHoldDelayForTests(uint64_t ns);
// Tests: the SIGBUS handler spins there until this CLOCK_MONOTONIC time, so handlers on several
// threads go on from the same instant (races between them made likely). 0: off.
void SetHoldUntilForTests(uint64_t monotonic_ns);

}  // namespace ras::signals
