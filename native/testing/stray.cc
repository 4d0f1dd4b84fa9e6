// Test tool, the signal side of a stand-in VMM (foreign_thread.h): stray SIGBUS and SIGSEGV
// (issue 20), handlers held back, a fault taken in sigsuspend, a recovery held after its read.
#include "testing/foreign_thread.h"

#include <pthread.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <csetjmp>
#include <cstring>
#include <thread>
#include <vector>

#include "capture/signals.h"
#include "lanes/lanes.h"
#include "state/sys.h"

namespace ras::testing {

namespace {

// Stray signals (issue 20): a VMM's own SIGBUS and SIGSEGV handlers, installed before the engine,
// that count what reaches them and return; and a thread that sends strays (tgkill at one thread, or
// kill at the process), one at a time, each time waiting until the VMM's handler has seen it.
std::atomic<uint64_t> g_vmm_seen[2];      // [0] SIGBUS, [1] SIGSEGV
std::atomic<uint64_t> g_vmm_faults{0};    // a delivery with si_code > 0: not one of the strays
void VmmCounting(int sig, siginfo_t* si, void*) {
  if (si->si_code > 0) g_vmm_faults.fetch_add(1);
  g_vmm_seen[sig == SIGSEGV].fetch_add(1);
}

Napi::Value InstallVmmCounters(const Napi::CallbackInfo& info) {
  for (int sig : {SIGBUS, SIGSEGV}) {
    struct sigaction sa = {};
    sa.sa_sigaction = VmmCounting;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    sigaction(sig, &sa, nullptr);
  }
  return info.Env().Undefined();
}

std::thread g_storm;
std::atomic<uint64_t> g_storm_sent{0}, g_storm_missed{0};

// testStrayStart(tid, count): tid > 0 tgkill at that thread, 0: kill at the process.
Napi::Value StrayStart(const Napi::CallbackInfo& info) {
  int tid = info[0].As<Napi::Number>().Int32Value();
  int count = info[1].As<Napi::Number>().Int32Value();
  g_storm_sent = 0;
  g_storm_missed = 0;
  g_storm = SpawnThread([tid, count] {
    for (int i = 0; i < count; i++) {
      int sig = i % 2 ? SIGSEGV : SIGBUS;
      uint64_t before = g_vmm_seen[sig == SIGSEGV].load();
      if (tid > 0)
        syscall(SYS_tgkill, getpid(), tid, sig);
      else
        kill(getpid(), sig);
      g_storm_sent.fetch_add(1);
      uint64_t until = MonotonicNs() + 5000000000ull;  // a stray the handler never sees: missed
      while (g_vmm_seen[sig == SIGSEGV].load() == before) {
        if (MonotonicNs() > until) {
          g_storm_missed.fetch_add(1);
          break;
        }
        usleep(50);
      }
    }
  });
  return info.Env().Undefined();
}

// testHoldUntil(msFromNow): SIGBUS handlers from now on wait for that instant (0: off).
Napi::Value HoldUntil(const Napi::CallbackInfo& info) {
  int ms = info[0].As<Napi::Number>().Int32Value();
  signals::SetHoldUntilForTests(ms > 0 ? MonotonicNs() + static_cast<uint64_t>(ms) * 1000000ull : 0);
  return info.Env().Undefined();
}

// testSuspendedFault(addr): a thread with SIGBUS blocked queues itself a memory-error SIGBUS for
// `addr` (BUS_MCEERR_AR) and takes it in sigsuspend: the handler runs with SIGBUS blocked in the
// interrupted context's mask (uc_sigmask). Returns when the thread is back (if the process lives).
Napi::Value SuspendedFault(const Napi::CallbackInfo& info) {
  bool lossless;
  uintptr_t addr = static_cast<uintptr_t>(info[0].As<Napi::BigInt>().Uint64Value(&lossless));
  std::thread t = SpawnThread([addr] {
    sigset_t bus, wait;
    sigemptyset(&bus);
    sigaddset(&bus, SIGBUS);
    pthread_sigmask(SIG_BLOCK, &bus, nullptr);
    siginfo_t si = {};
    si.si_signo = SIGBUS;
    si.si_code = 4;  // BUS_MCEERR_AR
    si.si_addr = reinterpret_cast<void*>(addr);
    si.si_addr_lsb = 12;
    syscall(SYS_rt_tgsigqueueinfo, getpid(), static_cast<int>(syscall(SYS_gettid)), SIGBUS, &si);
    pthread_sigmask(SIG_BLOCK, nullptr, &wait);
    sigdelset(&wait, SIGBUS);
    sigsuspend(&wait);
    // SIGBUS stays blocked: a signal left pending for this thread ends with it.
  });
  t.join();
  return info.Env().Undefined();
}

// testHoldAfterRead(set): 1 arms, 0 releases, -1 only reads; returns the state (2: holding).
Napi::Value HoldAfterRead(const Napi::CallbackInfo& info) {
  int set = info[0].As<Napi::Number>().Int32Value();
  if (set < 0) {
    int cur = lanes::HoldAfterReadForTests(0);
    if (cur != 0) lanes::HoldAfterReadForTests(cur);  // put it back (tests only: no race that matters)
    return Napi::Number::New(info.Env(), cur);
  }
  return Napi::Number::New(info.Env(), lanes::HoldAfterReadForTests(set));
}

Napi::Value StrayJoin(const Napi::CallbackInfo& info) {
  if (g_storm.joinable()) g_storm.join();
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("sent", static_cast<double>(g_storm_sent.load()));
  o.Set("missed", static_cast<double>(g_storm_missed.load()));
  o.Set("seenBus", static_cast<double>(g_vmm_seen[0].load()));
  o.Set("seenSegv", static_cast<double>(g_vmm_seen[1].load()));
  o.Set("faults", static_cast<double>(g_vmm_faults.load()));
  return o;
}

}  // namespace

void RegisterStraySignals(Napi::Env env, Napi::Object exports) {
  exports.Set("testInstallVmmCounters", Napi::Function::New(env, InstallVmmCounters));
  exports.Set("testStrayStart", Napi::Function::New(env, StrayStart));
  exports.Set("testStrayJoin", Napi::Function::New(env, StrayJoin));
  exports.Set("testHoldUntil", Napi::Function::New(env, HoldUntil));
  exports.Set("testSuspendedFault", Napi::Function::New(env, SuspendedFault));
  exports.Set("testHoldAfterRead", Napi::Function::New(env, HoldAfterRead));
}

}  // namespace ras::testing
