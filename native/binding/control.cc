// Control and introspection: page states, lost subpages, counters, pause, the reserve, read
// threads, guard markers, THP share.
#include "binding/args.h"
#include "binding/binding.h"
#include "binding/errors.h"
#include "split/mapping.h"
#include "split/recovery.h"
#include "state/state.h"

namespace ras::binding {

namespace {

Napi::Value PageStates(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Region* r = RegionById(env, info[0]);
  if (!r) return env.Undefined();
  Napi::Uint8Array arr = Napi::Uint8Array::New(env, r->pages);
  for (uint32_t i = 0; i < r->pages; i++) arr[i] = static_cast<uint8_t>(StateOf(r->Word(i).load()));
  return arr;
}

Napi::Value LostSubpages(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Region* r = RegionById(env, info[0]);
  if (!r) return env.Undefined();
  Napi::Array arr = Napi::Array::New(env);
  uint32_t n = 0;
  r->ForEachLost([&](uint64_t off) { arr.Set(n++, static_cast<double>(off)); });
  return arr;
}

Napi::Value Counters(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  auto& c = GlobalCounters();
  o.Set("captured", static_cast<double>(c.captured.load()));
  o.Set("overflow", static_cast<double>(c.overflow.load()));
  o.Set("stale", static_cast<double>(c.stale.load()));
  o.Set("processed", static_cast<double>(c.processed.load()));
  o.Set("posted", static_cast<double>(c.posted.load()));
  o.Set("delivered", static_cast<double>(c.delivered.load()));
  o.Set("paused", g_paused.load() != 0);
  o.Set("reserveBytes", static_cast<double>(mapping::ReserveBytes()));
  o.Set("reserveTarget", static_cast<double>(mapping::ReserveTarget()));
  std::vector<mapping::Pool> pools = mapping::ReservePools();
  Napi::Array arr = Napi::Array::New(env, pools.size());
  for (size_t i = 0; i < pools.size(); i++) {
    Napi::Object p = Napi::Object::New(env);
    p.Set("size", static_cast<double>(pools[i].size));
    p.Set("depth", static_cast<double>(pools[i].depth));
    p.Set("ready", static_cast<double>(pools[i].ready));
    p.Set("taken", static_cast<double>(pools[i].taken));
    p.Set("missed", static_cast<double>(pools[i].missed));
    arr.Set(static_cast<uint32_t>(i), p);
  }
  o.Set("reservePools", arr);
  return o;
}

Napi::Value Pause(const Napi::CallbackInfo& info) {
  g_paused.store(info[0].ToBoolean().Value() ? 1 : 0);
  WakeWorker();
  return info.Env().Undefined();
}

// setReserve(sizes, depths, now): the reserve's pools, one per huge page size.
Napi::Value SetReserve(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsArray() || !info[1].IsArray()) {
    Napi::TypeError::New(env, "setReserve(sizes, depths[, now])").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  Napi::Array sizes = info[0].As<Napi::Array>(), depths = info[1].As<Napi::Array>();
  std::vector<mapping::Pool> pools;
  for (uint32_t i = 0; i < sizes.Length() && i < depths.Length(); i++) {
    mapping::Pool p;
    uint64_t size, depth;
    if (!Uint(env, sizes.Get(i), "size", &size) || !Uint(env, depths.Get(i), "depth", &depth)) return env.Undefined();
    p.size = size;
    p.depth = static_cast<uint32_t>(depth);
    pools.push_back(p);
  }
  mapping::SetReservePools(pools);
  if (info.Length() > 2 && info[2].ToBoolean().Value()) mapping::RefillReserve();  // now, on this thread
  else WakeWorker();
  return env.Undefined();
}

Napi::Value UseGuardMarkers(const Napi::CallbackInfo& info) {
  mapping::UseGuardMarkers(info[0].ToBoolean().Value());
  return info.Env().Undefined();
}

Napi::Value SetReadThreads(const Napi::CallbackInfo& info) {
  uint64_t n;
  if (Uint(info.Env(), info[0], "threads", &n)) recovery::SetReadThreads(static_cast<int>(n > 16 ? 16 : n));
  return info.Env().Undefined();
}

Napi::Value HugeMappedShare(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint32_t page;
  Region* r = RegionPage(info, &page);
  if (!r) return env.Undefined();
  return Napi::Number::New(env, mapping::HugeMappedShare(r->PageAddress(page), r->huge_size));
}

}  // namespace

void RegisterControl(Napi::Env env, Napi::Object exports) {
  exports.Set("pageStates", Napi::Function::New(env, PageStates));
  exports.Set("lostSubpages", Napi::Function::New(env, LostSubpages));
  exports.Set("counters", Napi::Function::New(env, Counters));
  exports.Set("pause", Napi::Function::New(env, Pause));
  exports.Set("setReserve", Napi::Function::New(env, SetReserve));
  exports.Set("useGuardMarkers", Napi::Function::New(env, UseGuardMarkers));
  exports.Set("setReadThreads", Napi::Function::New(env, SetReadThreads));
  exports.Set("hugeMappedShare", Napi::Function::New(env, HugeMappedShare));
}

}  // namespace ras::binding
