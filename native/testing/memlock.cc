#include "testing/memlock.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/io_uring.h>
#include <linux/mempolicy.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <thread>

#include "split/uffd.h"

#ifndef MLOCK_ONFAULT
#define MLOCK_ONFAULT 1
#endif

namespace ras::testing {

namespace {
uintptr_t Addr(const Napi::Value& v) {
  bool lossless = false;
  return static_cast<uintptr_t>(v.As<Napi::BigInt>().Uint64Value(&lossless));
}
uint64_t Num(const Napi::Value& v) { return static_cast<uint64_t>(v.As<Napi::Number>().Int64Value()); }

// Each returns 0 or the errno: the tests assert on it.
Napi::Value Result(Napi::Env env, long rc) { return Napi::Number::New(env, rc == 0 ? 0 : errno); }

// testMlockall(flags): MCL_CURRENT 1, MCL_FUTURE 2, MCL_ONFAULT 4. Node does not live long under
// it (V8's MADV_DONTNEED is EINVAL on locked memory): a child process, short.
Napi::Value Mlockall(const Napi::CallbackInfo& info) { return Result(info.Env(), mlockall(static_cast<int>(Num(info[0])))); }
Napi::Value Munlockall(const Napi::CallbackInfo& info) { return Result(info.Env(), munlockall()); }

// testMlock(addr, len, onFault)
Napi::Value Mlock(const Napi::CallbackInfo& info) {
  void* a = reinterpret_cast<void*>(Addr(info[0]));
  uint64_t len = Num(info[1]);
  bool on_fault = info.Length() > 2 && info[2].ToBoolean().Value();
  return Result(info.Env(), on_fault ? syscall(SYS_mlock2, a, len, MLOCK_ONFAULT) : mlock(a, len));
}
Napi::Value Munlock(const Napi::CallbackInfo& info) {
  return Result(info.Env(), munlock(reinterpret_cast<void*>(Addr(info[0])), Num(info[1])));
}

// testMadvise(addr, len, advice)
Napi::Value Madvise(const Napi::CallbackInfo& info) {
  return Result(info.Env(), madvise(reinterpret_cast<void*>(Addr(info[0])), Num(info[1]), static_cast<int>(Num(info[2]))));
}

// testMbind(addr, len, mode, nodes[])
Napi::Value Mbind(const Napi::CallbackInfo& info) {
  unsigned long mask[16] = {};
  Napi::Array nodes = info[3].As<Napi::Array>();
  for (uint32_t i = 0; i < nodes.Length(); i++) {
    uint32_t n = nodes.Get(i).As<Napi::Number>().Uint32Value();
    if (n < 1024) mask[n / 64] |= 1UL << (n % 64);
  }
  return Result(info.Env(), syscall(SYS_mbind, Addr(info[0]), Num(info[1]), Num(info[2]), mask, 1024UL, 0U));
}

// testPinIoUring(addr, len): an io_uring whose fixed buffer is [addr, addr+len) (a long-term pin
// of those pages, as SPDK or a vhost backend registers guest RAM). Returns the ring's fd (>= 0), or
// -errno. testUnpin(fd) closes it (the pin goes with the ring).
Napi::Value PinIoUring(const Napi::CallbackInfo& info) {
  struct io_uring_params p = {};
  int fd = static_cast<int>(syscall(SYS_io_uring_setup, 4, &p));
  if (fd < 0) return Napi::Number::New(info.Env(), -errno);
  struct iovec iov = {reinterpret_cast<void*>(Addr(info[0])), Num(info[1])};
  if (syscall(SYS_io_uring_register, fd, IORING_REGISTER_BUFFERS, &iov, 1) != 0) {
    int e = errno;
    close(fd);
    return Napi::Number::New(info.Env(), -e);
  }
  return Napi::Number::New(info.Env(), fd);
}
Napi::Value Unpin(const Napi::CallbackInfo& info) { return Result(info.Env(), close(static_cast<int>(Num(info[0])))); }

// O_DIRECT writes of [addr, addr+len) to `path` on a native thread, over and over until stopped:
// each write pins the pages for its duration (the move of a pinned page gets EBUSY), and leaves
// guest memory as it is (a disk write from guest RAM, as a VMM with cache=none does).
struct DirectLoop {
  std::thread t;
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> reads{0};
  int err = 0;
};
Napi::Value StartDirectWrites(const Napi::CallbackInfo& info) {
  std::string path = info[0].As<Napi::String>().Utf8Value();
  uintptr_t a = Addr(info[1]);
  uint64_t len = Num(info[2]);
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_DIRECT | O_CLOEXEC, 0600);
  if (fd < 0) return Napi::Number::New(info.Env(), -errno);
  auto* l = new DirectLoop();
  l->t = std::thread([l, fd, a, len] {
    while (!l->stop.load()) {
      if (pwrite(fd, reinterpret_cast<void*>(a), len, 0) < 0) {
        l->err = errno;
        break;
      }
      l->reads.fetch_add(1);
    }
    close(fd);
  });
  return Napi::BigInt::New(info.Env(), static_cast<uint64_t>(reinterpret_cast<uintptr_t>(l)));
}
Napi::Value StopDirectWrites(const Napi::CallbackInfo& info) {
  auto* l = reinterpret_cast<DirectLoop*>(Addr(info[0]));
  l->stop.store(true);
  l->t.join();
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("writes", static_cast<double>(l->reads.load()));
  o.Set("errno", l->err);
  delete l;
  return o;
}
// testFailNextMarker(errno): the next poison marker's registration fails with it (a transient
// ENOMEM at vm.max_map_count), once.
Napi::Value FailNextMarker(const Napi::CallbackInfo& info) {
  uffd::TestFailNext(static_cast<int>(Num(info[0])));
  return info.Env().Undefined();
}
}  // namespace

void RegisterMemLock(Napi::Env env, Napi::Object exports) {
  exports.Set("testMlockall", Napi::Function::New(env, Mlockall));
  exports.Set("testMunlockall", Napi::Function::New(env, Munlockall));
  exports.Set("testMlock", Napi::Function::New(env, Mlock));
  exports.Set("testMunlock", Napi::Function::New(env, Munlock));
  exports.Set("testMadvise", Napi::Function::New(env, Madvise));
  exports.Set("testMbind", Napi::Function::New(env, Mbind));
  exports.Set("testPinIoUring", Napi::Function::New(env, PinIoUring));
  exports.Set("testUnpin", Napi::Function::New(env, Unpin));
  exports.Set("testFailNextMarker", Napi::Function::New(env, FailNextMarker));
  exports.Set("testStartDirectWrites", Napi::Function::New(env, StartDirectWrites));
  exports.Set("testStopDirectWrites", Napi::Function::New(env, StopDirectWrites));
}

}  // namespace ras::testing
