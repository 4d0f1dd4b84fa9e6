#include "vcpu_thread.h"

#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <time.h>

#include <errno.h>
#include <sys/ioctl.h>

#include <algorithm>
#include <cstddef>
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
              std::atomic<uint64_t>* recovering, const std::atomic<bool>* quit) {
  uint64_t deadline = NowNs() + static_cast<uint64_t>(wait_ms > 0 ? wait_ms : 0) * 1000000ull;
  for (;;) {
    if (quit && quit->load()) return -ECANCELED;
    *st = {};
    uint64_t now = NowNs();
    int slice = now >= deadline ? 0 : static_cast<int>(std::min<uint64_t>((deadline - now) / 1000000ull, kAskSliceMs));
    int rc = by_hva ? api->check_hva(addr, slice, st) : api->check_gpa(addr, slice, st);
    if (rc == 0 && st->state != HUGETLB_RAS_RECOVERING) return 0;
    if (rc != 0 && rc != -EAGAIN && rc != -EINTR && rc != -ETIMEDOUT) return rc;
    if (rc == 0) (*recovering)++;
    if (NowNs() >= deadline) {
      st->state = HUGETLB_RAS_RECOVERING;
      return -ETIMEDOUT;
    }
    if (rc != 0 || slice == 0) {  // a transient error, or an engine that does not wait: pace it
      timespec ts = {0, 1000000};
      nanosleep(&ts, nullptr);
    }
  }
}

bool EnterGate(kvm_run* run, const std::atomic<bool>* quit, void (*between)(void*), void* arg) {
  __atomic_store_n(&run->immediate_exit, 0, __ATOMIC_SEQ_CST);
  if (between) between(arg);
  return !quit->load(std::memory_order_seq_cst);
}

int RunVcpu(int fd, kvm_run* run, int sigbus_slot) {
  run->exit_reason = KVM_EXIT_UNKNOWN;
  sigbus::EnterRun(sigbus_slot);
  int r = ioctl(fd, KVM_RUN, 0);
  int e = errno;
  sigbus::LeaveRun(sigbus_slot);
  errno = e;
  return r;
}

bool EfaultUnresolved(std::atomic<uint64_t>* count, uint64_t* in_a_row) {
  (*count)++;
  if (++*in_a_row > 20000) return false;
  timespec ts = {0, 200000};
  nanosleep(&ts, nullptr);
  return true;
}

bool HasGuestCopy(const hugetlb_ras_api* api) {
  return api && api->version >= 2 && api->size >= offsetof(hugetlb_ras_api, copy_to_guest) + sizeof(void*) &&
         api->copy_from_guest && api->copy_to_guest;
}

int GuestCopy(const hugetlb_ras_api* api, uint64_t gpa, void* buf, uint64_t len, bool to_guest, int timeout_ms) {
  if (!HasGuestCopy(api)) return -ENOSYS;
  uint64_t lost[2] = {0, 0};  // 4096 bytes span at most two frames
  int rc = to_guest ? api->copy_to_guest(gpa, buf, len, lost, timeout_ms) : api->copy_from_guest(gpa, buf, len, lost, timeout_ms);
  if (rc < 0) return rc;
  return (lost[0] | lost[1]) ? 1 : 0;
}

bool RewindMmioRead(int fd, kvm_run* run, int sigbus_slot) {
  kvm_regs before;
  if (ioctl(fd, KVM_GET_REGS, &before) != 0) return false;
  uint32_t len = run->mmio.len > 8 ? 8 : run->mmio.len;
  memset(run->mmio.data, 0xff, len);
  bool completed = false;
  for (int k = 0; k < 4 && !completed; k++) {
    __atomic_store_n(&run->immediate_exit, 1, __ATOMIC_SEQ_CST);
    int r = RunVcpu(fd, run, sigbus_slot);
    int e = errno;
    __atomic_store_n(&run->immediate_exit, 0, __ATOMIC_SEQ_CST);
    if (r < 0 && (e == EINTR || e == EAGAIN)) completed = true;
    else if (r == 0 && run->exit_reason == KVM_EXIT_MMIO && run->mmio.is_write) continue;  // the write half: dropped
    else return false;
  }
  return completed && ioctl(fd, KVM_SET_REGS, &before) == 0;
}

}  // namespace ras_vmm
