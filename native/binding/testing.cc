// Test-only entry points: the pattern (fill, verify) and the native vCPU load threads.
#include <chrono>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "binding/args.h"
#include "binding/binding.h"
#include "binding/errors.h"
#include "capture/signals.h"
#include "simulate/simulate.h"
#include "split/numa.h"
#include "state/state.h"
#include "testing/bookkeeping.h"
#include "testing/mapcount.h"
#include "testing/pattern.h"
#include "testing/vcpu.h"

namespace ras::binding {

namespace {

Napi::Value FillPattern(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Region* r = RegionById(env, info[0]);
  uint64_t seed;
  if (!r || !Uint(env, info[1], "seed", &seed)) return env.Undefined();
  access::Fault f;
  if (!pattern::GuardedFillPattern(*r, seed, &f)) return FaultObject(env, f);
  return env.Undefined();
}

Napi::Value VerifyPattern(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Region* r = RegionById(env, info[0]);
  uint64_t seed;
  if (!r || !Uint(env, info[1], "seed", &seed)) return env.Undefined();
  constexpr uint64_t kMax = 1 << 20;
  std::unique_ptr<uint64_t[]> bad(new uint64_t[kMax]);
  pattern::Verify v = pattern::VerifyPattern(*r, seed, bad.get(), kMax);
  if (!v.ok) return NoSlot(env);
  Napi::Object o = Napi::Object::New(env);
  o.Set("checkedBytes", static_cast<double>(v.checked));
  o.Set("wrongBytes", static_cast<double>(v.wrong));
  o.Set("firstWrongOffset", static_cast<double>(v.first_wrong));
  uint64_t n = v.unreadable_count < kMax ? v.unreadable_count : kMax;
  Napi::Array arr = Napi::Array::New(env, n);
  for (uint64_t i = 0; i < n; i++) arr.Set(static_cast<uint32_t>(i), static_cast<double>(bad[i]));
  o.Set("unreadableOffsets", arr);
  return o;
}


Napi::Value StartVcpu(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Region* r = RegionById(env, info[0]);
  uint64_t threads, seed, win_off, win_len;
  if (!r || !Uint(env, info[1], "threads", &threads) || !Uint(env, info[2], "seed", &seed) ||
      !Uint(env, info[4], "windowOffset", &win_off) || !Uint(env, info[5], "windowLength", &win_len))
    return env.Undefined();
  if (threads < 1 || threads > 64 || !InRange(env, *r, win_off, win_len)) {
    if (!env.IsExceptionPending())
      errors::Code(env, "ERR_OUT_OF_RANGE", "threads must be 1..64").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  if (FreeSlots() < static_cast<int>(threads) + kSlotHeadroom) return NoSlot(env);
  vcpu::Options o;
  o.region = r;
  o.threads = static_cast<int>(threads);
  o.seed = seed;
  o.write_ratio = info[3].As<Napi::Number>().DoubleValue();
  o.window_offset = win_off & ~(kSubpage - 1);
  o.window_len = win_len & ~(kSubpage - 1);
  // Tests of the load itself: a pause after each fault's landing (a thread descheduled there).
  if (info.Length() > 6 && info[6].IsNumber()) o.land_delay_ms = info[6].As<Napi::Number>().Uint32Value();
  int handle = vcpu::Start(o);
  if (handle < 0) return NoSlot(env);
  return Napi::Number::New(env, handle);
}

Napi::Value StopVcpu(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  vcpu::Report rep;
  if (!info[0].IsNumber() || !vcpu::Stop(info[0].As<Napi::Number>().Int32Value(), &rep)) {
    errors::Code(env, "ERR_INVALID_ARG", "no such vCPU load").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  Napi::Object o = Napi::Object::New(env);
  o.Set("accesses", static_cast<double>(rep.accesses));
  o.Set("wrongBytes", static_cast<double>(rep.wrong_bytes));
  o.Set("firstWrongOffset", static_cast<double>(rep.first_wrong));
  Napi::Array stalls = Napi::Array::New(env);
  uint32_t n = 0;
  for (size_t t = 0; t < rep.stalls.size(); t++) {
    for (const StallRecord& s : rep.stalls[t]) {
      Napi::Object so = Napi::Object::New(env);
      so.Set("thread", static_cast<double>(t));
      so.Set("hostAddress", Napi::BigInt::New(env, static_cast<uint64_t>(s.addr)));
      so.Set("stallNs", Napi::BigInt::New(env, s.ns));
      so.Set("accessNs", Napi::BigInt::New(env, s.access_ns));
      so.Set("startNs", Napi::BigInt::New(env, s.t0));
      stalls.Set(n++, so);
    }
  }
  o.Set("stalls", stalls);
  Napi::Array mces = Napi::Array::New(env, rep.mces.size());
  for (size_t i = 0; i < rep.mces.size(); i++) {
    Napi::Object mo = Napi::Object::New(env);
    mo.Set("thread", rep.mces[i].thread);
    mo.Set("hostAddress", Napi::BigInt::New(env, static_cast<uint64_t>(rep.mces[i].addr)));
    mces.Set(static_cast<uint32_t>(i), mo);
  }
  o.Set("mceReports", mces);
  return o;
}

// Where replacement memory for a huge page would go: { multiNode, node } (node -1: unknown, or a
// single-node host where placement is a no-op).
Napi::Value NumaNode(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint32_t page;
  Region* r = RegionPage(info, &page);
  if (!r) return env.Undefined();
  Napi::Object o = Napi::Object::New(env);
  o.Set("multiNode", numa::MultiNode());
  o.Set("node", numa::HugePageNode(*r, page));
  return o;
}

// testRaise(address, code, lsb, count): `count` memory-error signals on this thread, as the kernel
// would send them (fills the report queue while the engine is paused).
Napi::Value Raise(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  bool lossless = false;
  uint64_t code, lsb, count;
  if (!info[0].IsBigInt() || !Uint(env, info[1], "code", &code) || !Uint(env, info[2], "lsb", &lsb) ||
      !Uint(env, info[3], "count", &count))
    return env.Undefined();
  uintptr_t addr = static_cast<uintptr_t>(info[0].As<Napi::BigInt>().Uint64Value(&lossless));
  for (uint64_t i = 0; i < count; i++) signals::RaiseMemoryError(addr, static_cast<int>(code), static_cast<int>(lsb));
  return env.Undefined();
}

std::mutex g_raisers_mu;
std::vector<std::thread> g_raisers;

// testRaiseInThread(address, code, lsb, delayMs?): one memory-error signal on a new thread (joined by
// testJoinRaisers), e.g. into a handler that testHoldDelay keeps busy; after delayMs if given.
Napi::Value RaiseInThread(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  bool lossless = false;
  uint64_t code, lsb;
  if (!info[0].IsBigInt() || !Uint(env, info[1], "code", &code) || !Uint(env, info[2], "lsb", &lsb))
    return env.Undefined();
  uintptr_t addr = static_cast<uintptr_t>(info[0].As<Napi::BigInt>().Uint64Value(&lossless));
  uint64_t delay_ms = 0;
  if (info.Length() > 3 && !info[3].IsUndefined() && !Uint(env, info[3], "delayMs", &delay_ms)) return env.Undefined();
  // Returns once the thread is about to raise it: the test's next step races with the handler only.
  auto started = std::make_shared<std::atomic<bool>>(false);
  {
    std::lock_guard<std::mutex> lock(g_raisers_mu);
    g_raisers.push_back(SpawnThread([addr, code, lsb, started, delay_ms] {
      started->store(true);
      if (delay_ms) std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms));
      signals::RaiseMemoryError(addr, static_cast<int>(code), static_cast<int>(lsb));
    }));
  }
  while (!started->load()) std::this_thread::yield();
  return env.Undefined();
}

Napi::Value JoinRaisers(const Napi::CallbackInfo& info) {
  std::vector<std::thread> ts;
  {
    std::lock_guard<std::mutex> lock(g_raisers_mu);
    ts.swap(g_raisers);
  }
  for (std::thread& t : ts) t.join();
  return info.Env().Undefined();
}

Napi::Value HoldDelay(const Napi::CallbackInfo& info) {
  uint64_t ns;
  if (!Uint(info.Env(), info[0], "ns", &ns)) return info.Env().Undefined();
  signals::SetHoldDelayForTests(ns);
  return info.Env().Undefined();
}

Napi::Value SimPoisonHold(const Napi::CallbackInfo& info) {
  uint64_t ns;
  if (!Uint(info.Env(), info[0], "ns", &ns)) return info.Env().Undefined();
  simulate::SetPoisonHoldForTests(ns);
  return info.Env().Undefined();
}

Napi::Value FillMapCount(const Napi::CallbackInfo& info) {
  uint64_t spare;
  if (!Uint(info.Env(), info[0], "spare", &spare)) return info.Env().Undefined();
  return Napi::Number::New(info.Env(), static_cast<double>(mapcount::Fill(static_cast<uint32_t>(spare))));
}

Napi::Value ReleaseMapCount(const Napi::CallbackInfo& info) {
  mapcount::Release();
  return info.Env().Undefined();
}

// testBookkeeping(size, hugeSize, markOffsets, clearPages): testing/bookkeeping.h.
Napi::Value Bookkeeping(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint64_t size, huge;
  if (!Uint(env, info[0], "size", &size) || !Uint(env, info[1], "hugeSize", &huge)) return env.Undefined();
  if (huge < kSubpage || (huge & (huge - 1)) || size % huge || size / huge > 0xffffffffull || !info[2].IsArray() ||
      !info[3].IsArray()) {
    Napi::TypeError::New(env, "testBookkeeping(size, hugeSize, marks[], clearPages[])").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  std::vector<uint64_t> marks;
  std::vector<uint32_t> clears;
  Napi::Array m = info[2].As<Napi::Array>(), c = info[3].As<Napi::Array>();
  for (uint32_t i = 0; i < m.Length(); i++) {
    uint64_t v;
    if (!Uint(env, m.Get(i), "mark", &v)) return env.Undefined();
    if (v >= size) {
      Napi::RangeError::New(env, "mark outside the region").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    marks.push_back(v);
  }
  for (uint32_t i = 0; i < c.Length(); i++) {
    uint64_t v;
    if (!Uint(env, c.Get(i), "clearPage", &v)) return env.Undefined();
    if (v >= size / huge) {
      Napi::RangeError::New(env, "page outside the region").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    clears.push_back(static_cast<uint32_t>(v));
  }
  bookkeeping::Result r = bookkeeping::Run(size, huge, marks, clears);
  Napi::Object o = Napi::Object::New(env);
  Napi::Array lost = Napi::Array::New(env, r.lost.size());
  for (size_t i = 0; i < r.lost.size(); i++) lost.Set(static_cast<uint32_t>(i), static_cast<double>(r.lost[i]));
  Napi::Array per = Napi::Array::New(env, r.per_page.size());
  for (size_t i = 0; i < r.per_page.size(); i++) per.Set(static_cast<uint32_t>(i), static_cast<double>(r.per_page[i]));
  o.Set("lost", lost);
  o.Set("lostInPageOfMark", per);
  o.Set("newlyMarked", static_cast<double>(r.newly_marked));
  o.Set("bookkeepingBytes", static_cast<double>(r.bookkeeping_bytes));
  o.Set("rssDeltaBytes", static_cast<double>(r.rss_delta));
  return o;
}

}  // namespace

void RegisterTesting(Napi::Env env, Napi::Object exports) {
  exports.Set("fillPattern", Napi::Function::New(env, FillPattern));
  exports.Set("verifyPattern", Napi::Function::New(env, VerifyPattern));
  exports.Set("startVcpuLoad", Napi::Function::New(env, StartVcpu));
  exports.Set("stopVcpuLoad", Napi::Function::New(env, StopVcpu));
  exports.Set("testNumaNode", Napi::Function::New(env, NumaNode));
  exports.Set("testRaise", Napi::Function::New(env, Raise));
  exports.Set("testRaiseInThread", Napi::Function::New(env, RaiseInThread));
  exports.Set("testJoinRaisers", Napi::Function::New(env, JoinRaisers));
  exports.Set("testHoldDelay", Napi::Function::New(env, HoldDelay));
  exports.Set("testSimPoisonHold", Napi::Function::New(env, SimPoisonHold));
  exports.Set("testFillMapCount", Napi::Function::New(env, FillMapCount));
  exports.Set("testReleaseMapCount", Napi::Function::New(env, ReleaseMapCount));
  exports.Set("testBookkeeping", Napi::Function::New(env, Bookkeeping));
  RegisterTestingWindows(env, exports);  // testing_windows.cc
}

}  // namespace ras::binding
