#include "bench/guarded_copy.h"

#include <errno.h>
#include <sys/mman.h>

#include <cstring>
#include <vector>

#include "binding/errors.h"
#include "hugetlb_ras.h"
#include "state/sys.h"

namespace ras::baseline {

namespace {

// guardedCopy(api, gpa, hva, bytes, reps, raw): per rep, ns of copy_from_guest(gpa, bytes) into
// already-faulted memory, and (raw) ns of memcpy of the same bytes from hva (only where nothing is
// lost: a raw read of a lost frame would fault). { copyNs[], memcpyNs[], lostFrames, rc }.
Napi::Value GuardedCopy(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  bool lossless = false;
  auto api = reinterpret_cast<const hugetlb_ras_api*>(static_cast<uintptr_t>(info[0].As<Napi::BigInt>().Uint64Value(&lossless)));
  uint64_t gpa = info[1].As<Napi::BigInt>().Uint64Value(&lossless);
  auto hva = reinterpret_cast<const char*>(static_cast<uintptr_t>(info[2].As<Napi::BigInt>().Uint64Value(&lossless)));
  uint64_t bytes = static_cast<uint64_t>(info[3].ToNumber().DoubleValue());
  uint32_t reps = info[4].ToNumber().Uint32Value();
  bool raw = info[5].ToBoolean().Value();
  if (!api || api->version < 2 || bytes == 0 || bytes > (4ull << 30) || reps == 0) {
    errors::Code(env, "ERR_INVALID_ARG", "guardedCopy: a C API table of version 2, 1 byte..4 GiB, reps > 0").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  char* dst = static_cast<char*>(mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  if (dst == MAP_FAILED) {
    errors::Sys(env, errno, "mmap").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  memset(dst, 0, bytes);  // already faulted: only the copy is measured
  std::vector<uint64_t> bits((bytes / 4096 + 1) / 64 + 2, 0);
  Napi::Array copy = Napi::Array::New(env, reps);
  Napi::Array mem = Napi::Array::New(env, raw ? reps : 0);
  int rc = 0;
  uint32_t lost = 0;
  for (uint32_t i = 0; i < reps; i++) {
    std::fill(bits.begin(), bits.end(), 0);
    uint64_t t0 = MonotonicNs();
    rc = api->copy_from_guest(gpa, dst, bytes, bits.data(), 10000);
    copy.Set(i, static_cast<double>(MonotonicNs() - t0));
    if (raw) {
      t0 = MonotonicNs();
      memcpy(dst, hva, bytes);
      mem.Set(i, static_cast<double>(MonotonicNs() - t0));
    }
  }
  for (uint64_t w : bits) lost += static_cast<uint32_t>(__builtin_popcountll(w));
  volatile char sink = dst[bytes - 1];
  (void)sink;
  munmap(dst, bytes);
  Napi::Object o = Napi::Object::New(env);
  o.Set("copyNs", copy);
  o.Set("memcpyNs", mem);
  o.Set("lostFrames", lost);
  o.Set("rc", rc);
  return o;
}

}  // namespace

void RegisterGuardedCopy(Napi::Env env, Napi::Object exports) {
  exports.Set("guardedCopy", Napi::Function::New(env, GuardedCopy));
}

}  // namespace ras::baseline
