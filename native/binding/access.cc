// Guarded access from JS: read and write guest memory without dying on poison.
#include <signal.h>

#include "binding/args.h"
#include "binding/binding.h"
#include "binding/errors.h"
#include "capture/access.h"
#include "linux_compat.h"
#include "state/state.h"

namespace ras::binding {

namespace {

Napi::Value Read(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Region* r = RegionById(env, info[0]);
  uint64_t off, len;
  if (!r || !Uint(env, info[1], "offset", &off) || !Uint(env, info[2], "length", &len) || !InRange(env, *r, off, len))
    return env.Undefined();
  Napi::Buffer<char> buf = Napi::Buffer<char>::New(env, len);
  access::Fault f;
  if (!access::GuardedCopy(buf.Data(), reinterpret_cast<void*>(r->start + off), len, &f)) return FaultObject(env, f);
  return buf;
}

Napi::Value Write(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Region* r = RegionById(env, info[0]);
  uint64_t off;
  if (!r || !Uint(env, info[1], "offset", &off)) return env.Undefined();
  if (!info[2].IsBuffer()) {
    errors::Code(env, "ERR_INVALID_ARG", "bytes must be a Buffer").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  Napi::Buffer<char> buf = info[2].As<Napi::Buffer<char>>();
  if (!InRange(env, *r, off, buf.Length())) return env.Undefined();
  access::Fault f;
  // Wait for huge pages being recovered (their healthy part is not lost), then refuse before
  // writing anything if the range touches memory known to be gone.
  if (buf.Length() && !access::WaitRecovered(*r, r->start + off, buf.Length(), &f)) return FaultObject(env, f);
  if (uintptr_t bad = buf.Length() ? access::FirstKnownUnusable(*r, r->start + off, buf.Length()) : 0) {
    f = {bad, SIGBUS, BUS_MCEERR_AR};
    return FaultObject(env, f);
  }
  if (!access::GuardedCopy(reinterpret_cast<void*>(r->start + off), buf.Data(), buf.Length(), &f))
    return FaultObject(env, f);
  return env.Undefined();
}

}  // namespace

void RegisterAccess(Napi::Env env, Napi::Object exports) {
  exports.Set("read", Napi::Function::New(env, Read));
  exports.Set("write", Napi::Function::New(env, Write));
}

}  // namespace ras::binding
