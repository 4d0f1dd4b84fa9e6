#include "vcpu_thread.h"

#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <time.h>

#include <mutex>

namespace ras_vmm {

namespace {

void WakeHandler(int) {}

// kvm_run->memory_fault (same union as mmio), for headers that predate it.
struct MemoryFault {
  uint64_t flags, gpa, size;
};

}  // namespace

uint64_t NowNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + ts.tv_nsec;
}

int KickSignal() { return SIGRTMIN + 7; }
int NudgeSignal() { return SIGRTMIN + 8; }

void InstallWakeHandler(int sig) {
  static std::mutex mu;
  static sigset_t installed;
  static bool init = false;
  std::lock_guard<std::mutex> lock(mu);
  if (!init) {
    sigemptyset(&installed);
    init = true;
  }
  if (sigismember(&installed, sig) == 1) return;
  struct sigaction sa = {};
  sa.sa_handler = WakeHandler;
  sigemptyset(&sa.sa_mask);
  sigaction(sig, &sa, nullptr);
  sigaddset(&installed, sig);
}

void BlockAsyncSignals(int wake_sig) {
  sigset_t s;
  sigfillset(&s);
  for (int sig : {SIGBUS, SIGSEGV, SIGILL, SIGFPE, SIGTRAP, wake_sig}) sigdelset(&s, sig);
  pthread_sigmask(SIG_SETMASK, &s, nullptr);
}

void Wake(kvm_run* run, std::thread& thread, int sig) {
  __atomic_store_n(&run->immediate_exit, 1, __ATOMIC_SEQ_CST);
  pthread_kill(thread.native_handle(), sig);
}

uint64_t MemoryFaultGpa(const kvm_run* run) {
  MemoryFault mf;
  memcpy(&mf, &run->mmio, sizeof(mf));
  return mf.gpa;
}

int AskEngine(const hugetlb_ras_api* api, int wait_ms, bool by_hva, uint64_t addr, hugetlb_ras_status* st,
              std::atomic<uint64_t>* recovering) {
  for (int tries = 0; tries < 100; tries++) {
    *st = {};
    int rc = by_hva ? api->check_hva(addr, wait_ms, st) : api->check_gpa(addr, wait_ms, st);
    if (rc != 0) return rc;
    if (st->state != HUGETLB_RAS_RECOVERING) break;
    (*recovering)++;
  }
  return 0;
}

bool EfaultUnresolved(std::atomic<uint64_t>* count, uint64_t* in_a_row) {
  (*count)++;
  if (++*in_a_row > 20000) return false;
  timespec ts = {0, 200000};
  nanosleep(&ts, nullptr);
  return true;
}

}  // namespace ras_vmm
