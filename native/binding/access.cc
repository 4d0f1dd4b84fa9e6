// Guarded access from JS: read and write guest memory without dying on poison.
#include <signal.h>

#include <vector>

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

// (id, offset, bytes) of the two writes: the region, the offset and the Buffer, checked; false with
// a coded error thrown.
bool WriteArgs(const Napi::CallbackInfo& info, Region** r, uint64_t* off, Napi::Buffer<char>* buf) {
  Napi::Env env = info.Env();
  *r = RegionById(env, info[0]);
  if (!*r || !Uint(env, info[1], "offset", off)) return false;
  if (!info[2].IsBuffer()) {
    errors::Code(env, "ERR_INVALID_ARG", "bytes must be a Buffer").ThrowAsJavaScriptException();
    return false;
  }
  *buf = info[2].As<Napi::Buffer<char>>();
  return InRange(env, **r, *off, buf->Length());
}

Napi::Value Write(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Region* r;
  uint64_t off;
  Napi::Buffer<char> buf;
  if (!WriteArgs(info, &r, &off, &buf)) return env.Undefined();
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

// The frames whose bit is set, as region offsets (4 KiB aligned, ascending).
Napi::Array LostOffsets(Napi::Env env, const Region& r, uintptr_t hva, const std::vector<uint64_t>& bits) {
  Napi::Array a = Napi::Array::New(env);
  uintptr_t frame0 = hva & ~(kSubpage - 1);
  uint32_t n = 0;
  for (uint64_t i = 0; i < bits.size() * 64; i++)
    if (bits[i / 64] & (1ull << (i % 64))) a.Set(n++, static_cast<double>(frame0 + i * kSubpage - r.start));
  return a;
}

std::vector<uint64_t> Bitmap(uintptr_t hva, uint64_t len) {
  return std::vector<uint64_t>(((hva & (kSubpage - 1)) + len + kSubpage - 1) / kSubpage / 64 + 1, 0);
}

// readAvailable(id, offset, length) -> { data, lost } | fault: lost frames read as zeros.
Napi::Value ReadAvailable(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Region* r = RegionById(env, info[0]);
  uint64_t off, len;
  if (!r || !Uint(env, info[1], "offset", &off) || !Uint(env, info[2], "length", &len) || !InRange(env, *r, off, len))
    return env.Undefined();
  Napi::Buffer<char> buf = Napi::Buffer<char>::New(env, len);
  std::vector<uint64_t> bits = Bitmap(r->start + off, len);
  access::Fault f;
  if (len && access::CopyAvailable(*r, r->start + off, buf.Data(), len, bits.data(), false, access::kGuardedWaitMs, &f) != 0)
    return FaultObject(env, f);
  Napi::Object o = Napi::Object::New(env);
  o.Set("data", buf);
  o.Set("lost", LostOffsets(env, *r, r->start + off, bits));
  return o;
}

// writeAvailable(id, offset, bytes) -> lost offsets skipped | fault: every healthy frame written.
Napi::Value WriteAvailable(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Region* r;
  uint64_t off;
  Napi::Buffer<char> buf;
  if (!WriteArgs(info, &r, &off, &buf)) return env.Undefined();
  std::vector<uint64_t> bits = Bitmap(r->start + off, buf.Length());
  access::Fault f;
  if (buf.Length() &&
      access::CopyAvailable(*r, r->start + off, buf.Data(), buf.Length(), bits.data(), true, access::kGuardedWaitMs, &f) != 0)
    return FaultObject(env, f);
  return LostOffsets(env, *r, r->start + off, bits);
}

}  // namespace

void RegisterAccess(Napi::Env env, Napi::Object exports) {
  exports.Set("read", Napi::Function::New(env, Read));
  exports.Set("write", Napi::Function::New(env, Write));
  exports.Set("readAvailable", Napi::Function::New(env, ReadAvailable));
  exports.Set("writeAvailable", Napi::Function::New(env, WriteAvailable));
}

}  // namespace ras::binding
