#include "bench/baseline.h"

#include "bench/guarded_copy.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <vector>

#include "binding/errors.h"
#include "linux_compat.h"
#include "state/region.h"
#include "state/sys.h"

namespace ras::baseline {

namespace {

// pread of 4 KiB at `off`, as the kernel answers it; `poisoned`: simulated poison (the engine's
// simulation keeps its own list, in the other addon), file offsets that fail with EIO as on
// Linux >= 6.5.
ssize_t Pread4k(int fd, char* dst, uint64_t off, const std::vector<uint64_t>& poisoned) {
  for (uint64_t p : poisoned)
    if (off >= p && off < p + kSubpage) {
      errno = EIO;
      return -1;
    }
  return pread(fd, dst, kSubpage, static_cast<off_t>(off));
}

// QEMU-RFC style: fresh anonymous memory MAP_FIXED over the huge page (MAP_POPULATE), then the
// page read back 4 KiB at a time, stepping over subpages that fail. Returns nanoseconds.
// naiveRecover(address, hugePageSize, path, fileOffset, poisonedFileOffsets)
Napi::Value NaiveRecover(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  bool lossless = false;
  if (info.Length() < 5 || !info[0].IsBigInt() || !info[1].IsNumber() || !info[2].IsString() ||
      !info[3].IsNumber() || !info[4].IsArray()) {
    errors::Code(env, "ERR_INVALID_ARG", "naiveRecover(address, hugePageSize, path, fileOffset, poisonedFileOffsets)")
        .ThrowAsJavaScriptException();
    return env.Undefined();
  }
  uintptr_t target = static_cast<uintptr_t>(info[0].As<Napi::BigInt>().Uint64Value(&lossless));
  uint64_t size = static_cast<uint64_t>(info[1].As<Napi::Number>().DoubleValue());
  std::string path = info[2].As<Napi::String>().Utf8Value();
  uint64_t off = static_cast<uint64_t>(info[3].As<Napi::Number>().DoubleValue());
  Napi::Array arr = info[4].As<Napi::Array>();
  std::vector<uint64_t> poisoned;
  for (uint32_t i = 0; i < arr.Length(); i++)
    poisoned.push_back(static_cast<uint64_t>(arr.Get(i).ToNumber().DoubleValue()) & ~(kSubpage - 1));
  if (size == 0 || size % kSubpage != 0 || target % kSubpage != 0) {
    errors::Code(env, "ERR_OUT_OF_RANGE", "address and size must be 4 KiB aligned").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    errors::Sys(env, errno, "open", path.c_str()).ThrowAsJavaScriptException();
    return env.Undefined();
  }
  uint64_t t0 = MonotonicNs();
  void* p = mmap(reinterpret_cast<void*>(target), size, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_POPULATE, -1, 0);
  if (p == MAP_FAILED) {
    int e = errno;
    close(fd);
    errors::Sys(env, e, "mmap").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  char* dst = static_cast<char*>(p);
  uint64_t lost = 0, reads = 0;
  for (uint64_t pos = 0; pos < size;) {
    ssize_t n = Pread4k(fd, dst + pos, off + pos, poisoned);
    reads++;
    if (n > 0) {
      pos += static_cast<uint64_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EIO || errno == EHWPOISON)) {
      uint64_t sub = pos & ~(kSubpage - 1);
      memset(dst + sub, 0, kSubpage);
      lost++;
      pos = sub + kSubpage;
      continue;
    }
    break;  // end of file or another error: the rest stays zero
  }
  uint64_t ns = MonotonicNs() - t0;
  close(fd);
  Napi::Object o = Napi::Object::New(env);
  o.Set("ns", static_cast<double>(ns));
  o.Set("lost", static_cast<double>(lost));
  o.Set("reads", static_cast<double>(reads));
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
  errors::InitEnv(env);
  errors::Register(env, exports);
  exports.Set("naiveRecover", Napi::Function::New(env, NaiveRecover));
  exports.Set("memcpyLimit", Napi::Function::New(env, MemcpyLimit));
  RegisterGuardedCopy(env, exports);
}

}  // namespace ras::baseline

namespace {
Napi::Object Init(Napi::Env env, Napi::Object exports) {
  ras::baseline::Register(env, exports);
  return exports;
}
}  // namespace

NODE_API_MODULE(hugetlb_ras_bench, Init)
