// Test-only entry points for issue 19's windows: poison of an old huge page nobody maps (the lazy
// back half's read), a report captured between close()'s drain and the unmap, and the eager swap
// held between its mremap and its guards, looked at from the kernel's side.
#include "binding/args.h"
#include "binding/binding.h"
#include "simulate/simulate.h"
#include "state/state.h"
#include "testing/swap_hold.h"
#include "testing/unmap_window.h"

namespace ras::binding {

namespace {

// testPoisonFile(regionId, offset): the region's backing file is poisoned at the 4 KiB holding
// `offset` (simulated), nothing mapped changes: hardware poison of an old huge page nobody maps.
Napi::Value PoisonFile(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Region* r = RegionById(env, info[0]);
  uint64_t off;
  if (!r || !Uint(env, info[1], "offset", &off) || !InRange(env, *r, off, 1)) return env.Undefined();
  simulate::PoisonFileOnly(r->dev, r->ino, r->file_offset + off);
  return env.Undefined();
}

// testPoisonAtUnmap(regionId, offset, real): testing/unmap_window.h.
Napi::Value PoisonAtUnmap(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Region* r = RegionById(env, info[0]);
  uint64_t off;
  if (!r || !Uint(env, info[1], "offset", &off) || !InRange(env, *r, off, 1)) return env.Undefined();
  testing::ArmPoisonAtUnmap(r->id, off, info.Length() > 2 && info[2].ToBoolean().Value());
  return env.Undefined();
}

// testHoldInSwap(set) -> state; testKernelRead(address, len) -> Buffer | errno: testing/swap_hold.h.
Napi::Value HoldInSwap(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), testing::HoldInSwap(info[0].As<Napi::Number>().Int32Value()));
}

Napi::Value KernelRead(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  bool lossless = false;
  uint64_t len;
  if (!info[0].IsBigInt() || !Uint(env, info[1], "len", &len)) return env.Undefined();
  uintptr_t addr = static_cast<uintptr_t>(info[0].As<Napi::BigInt>().Uint64Value(&lossless));
  Napi::Buffer<char> out = Napi::Buffer<char>::New(env, len);
  int e = testing::KernelRead(addr, len, out.Data());
  if (e) return Napi::Number::New(env, e);
  return out;
}

}  // namespace

void RegisterTestingWindows(Napi::Env env, Napi::Object exports) {
  exports.Set("testPoisonFile", Napi::Function::New(env, PoisonFile));
  exports.Set("testPoisonAtUnmap", Napi::Function::New(env, PoisonAtUnmap));
  exports.Set("testHoldInSwap", Napi::Function::New(env, HoldInSwap));
  exports.Set("testKernelRead", Napi::Function::New(env, KernelRead));
}

}  // namespace ras::binding
