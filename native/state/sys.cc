#include "state/sys.h"

#include <errno.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <climits>
#include <ctime>

namespace ras {

int Gettid() { return static_cast<int>(syscall(SYS_gettid)); }

uint64_t MonotonicNs() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

void FutexWait(std::atomic<uint32_t>* word, uint32_t expected, int timeout_ms) {
  struct timespec ts = {timeout_ms / 1000, (timeout_ms % 1000) * 1000000L};
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAIT, expected, timeout_ms < 0 ? nullptr : &ts, nullptr, 0);
}

void FutexWakeAll(std::atomic<uint32_t>* word) {
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAKE, INT_MAX, nullptr, nullptr, 0);
}

void SetThreadNice(int nice) {
  if (setpriority(PRIO_PROCESS, static_cast<id_t>(Gettid()), nice) != 0 && nice < 0)
    setpriority(PRIO_PROCESS, static_cast<id_t>(Gettid()), 0);
}

void RaiseThreadPriority(int rt_priority) {
  if (rt_priority <= 0) {
    SetThreadNice(0);
    return;
  }
  struct sched_param sp = {};
  sp.sched_priority = rt_priority;
  if (pthread_setschedparam(pthread_self(), SCHED_FIFO, &sp) == 0) return;
  setpriority(PRIO_PROCESS, static_cast<id_t>(Gettid()), -5 * rt_priority);
}

Sched CurrentSched() {
  Sched s;
  struct sched_param sp = {};
  pthread_getschedparam(pthread_self(), &s.policy, &sp);
  s.rt_priority = sp.sched_priority;
  errno = 0;
  s.nice = getpriority(PRIO_PROCESS, static_cast<id_t>(Gettid()));
  return s;
}

void SetSched(const Sched& s) {
  struct sched_param sp = {};
  sp.sched_priority = s.policy == SCHED_FIFO || s.policy == SCHED_RR ? s.rt_priority : 0;
  pthread_setschedparam(pthread_self(), s.policy, &sp);
  setpriority(PRIO_PROCESS, static_cast<id_t>(Gettid()), s.nice);
}

void AsyncSignals(sigset_t* set) {
  sigfillset(set);
  for (int sig : {SIGBUS, SIGSEGV, SIGFPE, SIGILL, SIGTRAP, SIGSYS}) sigdelset(set, sig);
}

}  // namespace ras
