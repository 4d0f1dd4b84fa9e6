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
#include "hugetlb_ras.h"
#include "lanes/lanes.h"
#include "state/sys.h"

namespace ras::testing {

namespace {

// What the "VMM" handler saw; filled in the handler, so fixed-size and lock-free.
struct Delivery {
  uintptr_t addr;
  int code;
  int lsb;
  bool ucontext;
};
constexpr int kMaxDeliveries = 256;
Delivery g_deliveries[kMaxDeliveries];
std::atomic<int> g_count{0};
struct sigaction g_prev;
bool g_installed = false;
thread_local sigjmp_buf* t_jump = nullptr;

void VmmHandler(int sig, siginfo_t* si, void* uc) {
  int n = g_count.fetch_add(1);
  if (n < kMaxDeliveries)
    g_deliveries[n] = {reinterpret_cast<uintptr_t>(si->si_addr), si->si_code, si->si_addr_lsb, uc != nullptr};
  // A VMM would note the frame for the vCPU loop and let KVM_RUN return; this thread has no
  // KVM_RUN to return from, so it skips the access.
  if (t_jump) siglongjmp(*t_jump, 1);
  // Nobody to skip for: behave as a VMM that does not know the address (die).
  signal(sig, SIG_DFL);
  raise(sig);
}

Napi::Value InstallVmmHandler(const Napi::CallbackInfo& info) {
  if (!g_installed) {
    struct sigaction sa = {};
    sa.sa_sigaction = VmmHandler;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGBUS, &sa, &g_prev);
    g_installed = true;
  }
  return info.Env().Undefined();
}

// One byte per address, on a new thread that blocks asynchronous signals like a VMM's vCPU
// thread; with `staleAt`, that thread first sends itself a KVM-style late report (BUS_MCEERR_AR,
// lsb 12) for that address. Returns {values, skipped, deliveries}.
Napi::Value ForeignRead(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Array arr = info[0].As<Napi::Array>();
  std::vector<uintptr_t> addrs;
  for (uint32_t i = 0; i < arr.Length(); i++) {
    bool lossless;
    addrs.push_back(static_cast<uintptr_t>(arr.Get(i).As<Napi::BigInt>().Uint64Value(&lossless)));
  }
  uintptr_t stale = 0;
  if (info.Length() > 1 && info[1].IsBigInt()) {
    bool lossless;
    stale = static_cast<uintptr_t>(info[1].As<Napi::BigInt>().Uint64Value(&lossless));
  }
  std::vector<int> values(addrs.size(), -1);
  int first = g_count.load();
  std::thread t = SpawnThread([&] {
    sigset_t all;
    sigfillset(&all);
    sigdelset(&all, SIGBUS);
    sigdelset(&all, SIGSEGV);
    pthread_sigmask(SIG_BLOCK, &all, nullptr);
    if (stale) {
      siginfo_t si = {};
      si.si_signo = SIGBUS;
      si.si_code = 4;  // BUS_MCEERR_AR
      si.si_addr = reinterpret_cast<void*>(stale);
      si.si_addr_lsb = 12;
      syscall(SYS_rt_tgsigqueueinfo, getpid(), static_cast<int>(syscall(SYS_gettid)), SIGBUS, &si);
    }
    for (size_t i = 0; i < addrs.size(); i++) {
      sigjmp_buf jb;
      t_jump = &jb;
      if (sigsetjmp(jb, 1) == 0) values[i] = *reinterpret_cast<volatile unsigned char*>(addrs[i]);
      t_jump = nullptr;
    }
  });
  t.join();
  Napi::Object o = Napi::Object::New(env);
  Napi::Array v = Napi::Array::New(env, values.size());
  for (size_t i = 0; i < values.size(); i++) v.Set(static_cast<uint32_t>(i), values[i]);
  o.Set("values", v);
  int last = g_count.load();
  Napi::Array d = Napi::Array::New(env);
  for (int i = first; i < last && i < kMaxDeliveries; i++) {
    Napi::Object x = Napi::Object::New(env);
    x.Set("addr", Napi::BigInt::New(env, static_cast<uint64_t>(g_deliveries[i].addr)));
    x.Set("code", g_deliveries[i].code);
    x.Set("lsb", g_deliveries[i].lsb);
    x.Set("ucontext", g_deliveries[i].ucontext);
    d.Set(static_cast<uint32_t>(i - first), x);
  }
  o.Set("deliveries", d);
  return o;
}

}  // namespace

void RegisterForeignThread(Napi::Env env, Napi::Object exports) {
  exports.Set("testInstallVmmHandler", Napi::Function::New(env, InstallVmmHandler));
  exports.Set("testForeignRead", Napi::Function::New(env, ForeignRead));
  RegisterCapiCalls(env, exports);
  RegisterStraySignals(env, exports);
}

}  // namespace ras::testing
