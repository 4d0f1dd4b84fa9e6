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

const hugetlb_ras_api* Api(const Napi::Value& v) {
  bool lossless;
  return reinterpret_cast<const hugetlb_ras_api*>(static_cast<uintptr_t>(v.As<Napi::BigInt>().Uint64Value(&lossless)));
}

Napi::Object StatusObject(Napi::Env env, int rc, const hugetlb_ras_status& st) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("rc", rc);
  o.Set("state", st.state);
  o.Set("guard", st.guard);
  o.Set("regionId", st.region_id);
  o.Set("wholeHugePage", st.whole_huge_page);
  o.Set("gpa", Napi::BigInt::New(env, st.gpa));
  o.Set("hva", Napi::BigInt::New(env, st.hva));
  o.Set("hugePageGpa", Napi::BigInt::New(env, st.huge_page_gpa));
  o.Set("hugePageSize", static_cast<double>(st.huge_page_size));
  o.Set("code", st.code);
  return o;
}

// capiCheck(api, 'hva' | 'gpa', address, timeoutMs), from a thread of its own (as a vCPU's).
Napi::Value CapiCheck(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const hugetlb_ras_api* api = Api(info[0]);
  bool by_gpa = info[1].As<Napi::String>().Utf8Value() == "gpa";
  bool lossless;
  uint64_t a = info[2].As<Napi::BigInt>().Uint64Value(&lossless);
  int timeout = info[3].As<Napi::Number>().Int32Value();
  hugetlb_ras_status st;
  int rc = 0;
  std::thread t = SpawnThread([&] { rc = by_gpa ? api->check_gpa(a, timeout, &st) : api->check_hva(a, timeout, &st); });
  t.join();
  return StatusObject(env, rc, st);
}

// capiCopy(api, 'from' | 'to', gpa, lengthOrBuffer, timeoutMs), from a thread of its own:
// { rc, data (from), lost: frame indices whose bit is set }.
Napi::Value CapiCopy(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const hugetlb_ras_api* api = Api(info[0]);
  bool to = info[1].As<Napi::String>().Utf8Value() == "to";
  bool lossless;
  uint64_t gpa = info[2].As<Napi::BigInt>().Uint64Value(&lossless);
  std::vector<char> buf;
  if (to) {
    Napi::Buffer<char> b = info[3].As<Napi::Buffer<char>>();
    buf.assign(b.Data(), b.Data() + b.Length());
  } else {
    buf.assign(static_cast<size_t>(info[3].As<Napi::Number>().Int64Value()), static_cast<char>(0xee));
  }
  int timeout = info[4].As<Napi::Number>().Int32Value();
  uint64_t frames = (((gpa & 4095) + buf.size() + 4095) / 4096);
  std::vector<uint64_t> bits(frames / 64 + 1, 0);
  int rc = 0;
  std::thread t = SpawnThread([&] {
    rc = to ? api->copy_to_guest(gpa, buf.data(), buf.size(), bits.data(), timeout)
            : api->copy_from_guest(gpa, buf.data(), buf.size(), bits.data(), timeout);
  });
  t.join();
  Napi::Object o = Napi::Object::New(env);
  o.Set("rc", rc);
  if (!to) o.Set("data", Napi::Buffer<char>::Copy(env, buf.data(), buf.size()));
  Napi::Array lost = Napi::Array::New(env);
  uint32_t n = 0;
  for (uint64_t i = 0; i < bits.size() * 64; i++)
    if (bits[i / 64] & (1ull << (i % 64))) lost.Set(n++, static_cast<double>(i));
  o.Set("lost", lost);
  return o;
}

Napi::Value CapiNextLost(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const hugetlb_ras_api* api = Api(info[0]);
  bool lossless;
  uint64_t cursor = info[1].As<Napi::BigInt>().Uint64Value(&lossless);
  hugetlb_ras_lost out[64];
  int n = api->next_lost(&cursor, out, 64);
  Napi::Object o = Napi::Object::New(env);
  o.Set("cursor", Napi::BigInt::New(env, cursor));
  Napi::Array a = Napi::Array::New(env, n > 0 ? n : 0);
  for (int i = 0; i < n; i++) {
    Napi::Object x = Napi::Object::New(env);
    x.Set("gpa", Napi::BigInt::New(env, out[i].gpa));
    x.Set("hva", Napi::BigInt::New(env, out[i].hva));
    x.Set("size", static_cast<double>(out[i].size));
    x.Set("regionId", out[i].region_id);
    x.Set("code", out[i].code);
    a.Set(static_cast<uint32_t>(i), x);
  }
  o.Set("lost", a);
  o.Set("version", api->version);
  o.Set("size", api->size);
  return o;
}

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

void RegisterForeignThread(Napi::Env env, Napi::Object exports) {
  exports.Set("testInstallVmmHandler", Napi::Function::New(env, InstallVmmHandler));
  exports.Set("testForeignRead", Napi::Function::New(env, ForeignRead));
  exports.Set("testCapiCheck", Napi::Function::New(env, CapiCheck));
  exports.Set("testCapiNextLost", Napi::Function::New(env, CapiNextLost));
  exports.Set("testCapiCopy", Napi::Function::New(env, CapiCopy));
  exports.Set("testInstallVmmCounters", Napi::Function::New(env, InstallVmmCounters));
  exports.Set("testStrayStart", Napi::Function::New(env, StrayStart));
  exports.Set("testStrayJoin", Napi::Function::New(env, StrayJoin));
  exports.Set("testHoldUntil", Napi::Function::New(env, HoldUntil));
  exports.Set("testSuspendedFault", Napi::Function::New(env, SuspendedFault));
  exports.Set("testHoldAfterRead", Napi::Function::New(env, HoldAfterRead));
}

}  // namespace ras::testing
