#include "binding/args.h"

#include <string>

#include "binding/errors.h"

namespace ras::binding {

Region* RegionById(Napi::Env env, const Napi::Value& v) {
  if (!v.IsNumber()) {
    errors::Code(env, "ERR_INVALID_ARG", "region id must be a number").ThrowAsJavaScriptException();
    return nullptr;
  }
  if (Region* r = FindRegionById(v.As<Napi::Number>().Uint32Value())) return r;
  errors::Code(env, "ERR_REGION_CLOSED", "no such region (unmapped or engine closed)").ThrowAsJavaScriptException();
  return nullptr;
}

Region* RegionPage(const Napi::CallbackInfo& info, uint32_t* page) {
  Napi::Env env = info.Env();
  Region* r = RegionById(env, info[0]);
  uint64_t p;
  if (!r || !Uint(env, info[1], "page", &p)) return nullptr;
  if (p >= r->pages) {
    errors::Code(env, "ERR_OUT_OF_RANGE", "page outside the region").ThrowAsJavaScriptException();
    return nullptr;
  }
  *page = static_cast<uint32_t>(p);
  return r;
}

bool Uint(Napi::Env env, const Napi::Value& v, const char* what, uint64_t* out) {
  if (!v.IsNumber()) {
    errors::Code(env, "ERR_INVALID_ARG", std::string(what) + " must be a number").ThrowAsJavaScriptException();
    return false;
  }
  double d = v.As<Napi::Number>().DoubleValue();
  if (!(d >= 0) || d > 9007199254740991.0 || d != static_cast<double>(static_cast<uint64_t>(d))) {
    errors::Code(env, "ERR_OUT_OF_RANGE", std::string(what) + " must be a non-negative integer")
        .ThrowAsJavaScriptException();
    return false;
  }
  *out = static_cast<uint64_t>(d);
  return true;
}

bool InRange(Napi::Env env, Region& r, uint64_t off, uint64_t len) {
  uint64_t size = r.end - r.start;
  if (off > size || len > size - off) {
    errors::Code(env, "ERR_OUT_OF_RANGE", "offset/length outside the region").ThrowAsJavaScriptException();
    return false;
  }
  return true;
}

Napi::Value NoSlot(Napi::Env env) {
  errors::Code(env, "ERR_TOO_MANY_THREADS", "no thread slot free for a guarded access (too many vCPU threads)")
      .ThrowAsJavaScriptException();
  return env.Undefined();
}

Napi::Value FaultObject(Napi::Env env, const access::Fault& f) {
  if (f.signal == access::kFaultNoSlot) return NoSlot(env);
  Napi::Object o = Napi::Object::New(env);
  o.Set("fault", Napi::BigInt::New(env, static_cast<uint64_t>(f.addr)));
  o.Set("signal", f.signal);
  o.Set("code", f.code);
  return o;
}

}  // namespace ras::binding
