// The lazy recovery path (split/lazy.h) to JS: whether it is available and why not, its counters,
// and the switch that forces the eager path (tests, benchmark).
#include "binding/binding.h"
#include "lanes/lanes.h"
#include "split/lazy.h"

namespace ras::binding {

namespace {
Napi::Value LazyInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  int err = 0;
  const char* sc = nullptr;
  const char* why = lazy::Unavailable(&err, &sc);
  o.Set("available", why == nullptr);
  o.Set("enabled", lazy::Enabled());
  if (why) {
    o.Set("reason", why);
    o.Set("errno", err);
    if (sc) o.Set("syscall", sc);
  }
  lazy::Counters c = lazy::GetCounters();
  o.Set("lazy", static_cast<double>(c.lazy));
  o.Set("eager", static_cast<double>(c.eager));
  o.Set("faultFills", static_cast<double>(c.fault_fills));
  o.Set("takenBack", static_cast<double>(c.taken_back));
  o.Set("collapsed", static_cast<double>(c.collapsed));
  o.Set("inPlaceFinishes", static_cast<double>(c.in_place_finishes));
  return o;
}

// Tests: hold the back halves of lazy recoveries (the page stays registered, its touchers served
// piece by piece) until released, to act inside that window deterministically.
Napi::Value HoldBackHalves(const Napi::CallbackInfo& info) {
  lazy::HoldBackHalves(info.Length() > 0 && info[0].ToBoolean().Value());
  lanes::Wake();  // idle lanes sleep: tell them the back halves may go
  return info.Env().Undefined();
}

Napi::Value SetLazyRecovery(const Napi::CallbackInfo& info) {
  lazy::SetEnabled(info.Length() > 0 && info[0].ToBoolean().Value());
  return info.Env().Undefined();
}
}  // namespace

void RegisterLazy(Napi::Env env, Napi::Object exports) {
  exports.Set("lazyInfo", Napi::Function::New(env, LazyInfo));
  exports.Set("setLazyRecovery", Napi::Function::New(env, SetLazyRecovery));
  exports.Set("testHoldBackHalves", Napi::Function::New(env, HoldBackHalves));
}

}  // namespace ras::binding
