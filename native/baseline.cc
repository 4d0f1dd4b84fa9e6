#include "baseline.h"

#include <errno.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstring>

#include "errors.h"
#include "fileio.h"
#include "registry.h"

namespace ras::baseline {

namespace {

Region* ById(Napi::Env env, const Napi::Value& v) {
  if (Region* r = FindRegionById(v.ToNumber().Uint32Value())) return r;
  errors::Code(env, "ERR_REGION_CLOSED", "no such region").ThrowAsJavaScriptException();
  return nullptr;
}

// QEMU-RFC style: fresh anonymous memory MAP_FIXED over the huge page (MAP_POPULATE), then the
// page read back 4 KiB at a time, stepping over subpages that fail. Returns nanoseconds.
Napi::Value NaiveRecover(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Region* r = ById(env, info[0]);
  if (!r) return env.Undefined();
  uint32_t page = info[1].ToNumber().Uint32Value();
  if (page >= r->pages) {
    errors::Code(env, "ERR_OUT_OF_RANGE", "page outside the region").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  uintptr_t target = r->PageAddress(page);
  uint64_t off = r->file_offset + (static_cast<uint64_t>(page) << r->huge_shift);
  uint64_t t0 = MonotonicNs();
  void* p = mmap(reinterpret_cast<void*>(target), r->huge_size, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_POPULATE, -1, 0);
  if (p == MAP_FAILED) {
    errors::Sys(env, errno, "mmap").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  fileio::ReadBack rb = fileio::ReadAround(r->fd, r->dev, r->ino, off, static_cast<char*>(p), r->huge_size, kSubpage, 0);
  uint64_t ns = MonotonicNs() - t0;
  Napi::Object o = Napi::Object::New(env);
  o.Set("ns", static_cast<double>(ns));
  o.Set("lost", static_cast<double>(rb.lost.size()));
  o.Set("reads", rb.calls);
  return o;
}

// memcpy of `bytes` into already-faulted memory: the physical limit of any copy-based recovery.
Napi::Value MemcpyLimit(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint64_t bytes = static_cast<uint64_t>(info[0].ToNumber().DoubleValue());
  if (bytes == 0 || bytes > (4ull << 30)) {
    errors::Code(env, "ERR_OUT_OF_RANGE", "bytes must be 1..4 GiB").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  char* src = static_cast<char*>(mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  char* dst = static_cast<char*>(mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  if (src == MAP_FAILED || dst == MAP_FAILED) {
    errors::Sys(env, errno, "mmap").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  memset(src, 0x5a, bytes);
  memset(dst, 0, bytes);  // already faulted: only the copy is measured
  uint64_t t0 = MonotonicNs();
  memcpy(dst, src, bytes);
  uint64_t ns = MonotonicNs() - t0;
  volatile char sink = dst[bytes - 1];
  (void)sink;
  munmap(src, bytes);
  munmap(dst, bytes);
  return Napi::Number::New(env, static_cast<double>(ns));
}

}  // namespace

void Register(Napi::Env env, Napi::Object exports) {
  exports.Set("naiveRecover", Napi::Function::New(env, NaiveRecover));
  exports.Set("memcpyLimit", Napi::Function::New(env, MemcpyLimit));
}

}  // namespace ras::baseline
