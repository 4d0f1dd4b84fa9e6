// The OS primitives every stage shares: thread ids, the monotonic clock, futexes, scheduling, and
// the one way the addon creates a thread.
#pragma once

#include <signal.h>

#include <atomic>
#include <cstdint>
#include <thread>
#include <utility>

namespace ras {

int Gettid();        // async-signal-safe
uint64_t MonotonicNs();  // async-signal-safe
void FutexWait(std::atomic<uint32_t>* word, uint32_t expected, int timeout_ms);  // < 0: no timeout
void FutexWakeAll(std::atomic<uint32_t>* word);  // async-signal-safe

// Real-time (SCHED_FIFO) where permitted (root / CAP_SYS_NICE), else a better nice value: a stalled
// vCPU waits for the recovery threads, it must not wait for the scheduler too. Only for short
// bursts: a real-time thread copying 1 GiB would starve every vCPU of a small host.
void RaiseThreadPriority(int rt_priority);
// Normal scheduling with this nice value (a negative one where permitted): for long work that
// should win the CPU without stopping anybody.
void SetThreadNice(int nice);

// The calling thread's scheduling, saved to be put back (after a stretch at another priority).
struct Sched {
  int policy = 0;
  int rt_priority = 0;
  int nice = 0;
};
Sched CurrentSched();
void SetSched(const Sched& s);

// Every signal except the synchronous ones (SIGBUS, SIGSEGV, SIGFPE, SIGILL, SIGTRAP, SIGSYS),
// which the thread itself raises and must handle.
void AsyncSignals(sigset_t* set);

// Every thread the addon creates starts through here: with the asynchronous signals (SIGINT,
// SIGTERM, SIGCHLD, SIGPIPE, SIGUSR1, ...) blocked, so Node's handlers and the process-directed
// signals they serve never run on a recovery lane (SCHED_FIFO), a reader or a vCPU load thread.
// The new thread inherits the mask; the caller's mask is put back before this returns.
template <class F, class... A>
std::thread SpawnThread(F&& f, A&&... args) {
  sigset_t block, old;
  AsyncSignals(&block);
  pthread_sigmask(SIG_BLOCK, &block, &old);
  std::thread t(std::forward<F>(f), std::forward<A>(args)...);
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  return t;
}

}  // namespace ras
