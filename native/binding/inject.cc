// Poison injection: real (MADV_HWPOISON) and simulated, and the probe whether real works here.
#include <errno.h>
#include <signal.h>
#include <sys/mman.h>

#include "binding/args.h"
#include "binding/binding.h"
#include "binding/errors.h"
#include "capture/access.h"
#include "linux_compat.h"
#include "simulate/simulate.h"
#include "state/state.h"

namespace ras::binding {

namespace {

// Whether MADV_HWPOISON works here, asked without poisoning anything: on an untouched PROT_NONE
// page the kernel answers EINVAL (no CONFIG_MEMORY_FAILURE) or EPERM (no CAP_SYS_ADMIN) before it
// looks for a page, and EFAULT when it would have poisoned one.
Napi::Value HwpoisonProbe(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  void* p = mmap(nullptr, kSubpage, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return Napi::Number::New(env, errno);
  int rc = madvise(p, kSubpage, MADV_HWPOISON);
  int e = rc == 0 ? 0 : errno;
  munmap(p, kSubpage);
  return Napi::Number::New(env, e);
}

Napi::Value InjectMadvise(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Region* r = RegionById(env, info[0]);
  uint64_t off;
  if (!r || !Uint(env, info[1], "offset", &off) || !InRange(env, *r, off, 1)) return env.Undefined();
  uintptr_t addr = (r->start + off) & ~(kSubpage - 1);
  uint32_t page = r->PageIndex(addr);
  uint64_t captured_before = GlobalCounters().captured.load();
  ThreadSlot* slot = ClaimSlot(kSlotReturn);  // 6.12 sends the SIGBUS during the call
  int rc = madvise(reinterpret_cast<void*>(addr), kSubpage, MADV_HWPOISON);
  int e = errno;
  ReleaseSlot(slot);
  if (rc != 0 && e == EBUSY) {
    // The kernel could not finish its own handling (threads still hold the huge page) but the
    // page may well be poisoned: if touching it now is a memory error, the injection worked.
    char byte;
    access::Fault f;
    if (!access::GuardedCopy(&byte, reinterpret_cast<void*>(addr), 1, &f) && f.signal == SIGBUS &&
        (f.code == BUS_MCEERR_AR || f.code == BUS_MCEERR_AO))
      rc = 0;
  }
  if (rc != 0) {
    errors::Sys(env, e, "madvise", "MADV_HWPOISON").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  bool signalled = GlobalCounters().captured.load() != captured_before;
  if (!signalled && StateOf(r->Word(page).load()) == kNormal) {
    // Kernels that poison silently (6.1) report at the next access: make that access now.
    char byte;
    access::Fault f;
    access::GuardedCopy(&byte, reinterpret_cast<void*>(addr), 1, &f);
  }
  Napi::Object o = Napi::Object::New(env);
  o.Set("hostAddress", Napi::BigInt::New(env, static_cast<uint64_t>(addr)));
  o.Set("signalledDuringCall", signalled);
  return o;
}

Napi::Value InjectSimulated(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Region* r = RegionById(env, info[0]);
  uint64_t off;
  if (!r || !Uint(env, info[1], "offset", &off) || !InRange(env, *r, off, 1)) return env.Undefined();
  bool ao = info[2].ToBoolean().Value();
  bool send = info[3].ToBoolean().Value();
  uintptr_t addr = (r->start + off) & ~(kSubpage - 1);
  ThreadSlot* slot = ClaimSlot(kSlotReturn);
  const char* sc = nullptr;
  int e = simulate::Poison(*r, addr, ao ? BUS_MCEERR_AO : BUS_MCEERR_AR, send, &sc);
  ReleaseSlot(slot);
  if (e != 0) {
    errors::Sys(env, e, sc).ThrowAsJavaScriptException();
    return env.Undefined();
  }
  Napi::Object o = Napi::Object::New(env);
  o.Set("hostAddress", Napi::BigInt::New(env, static_cast<uint64_t>(addr)));
  o.Set("signalledDuringCall", send);
  return o;
}

}  // namespace

void RegisterInject(Napi::Env env, Napi::Object exports) {
  exports.Set("hwpoisonProbe", Napi::Function::New(env, HwpoisonProbe));
  exports.Set("injectMadvise", Napi::Function::New(env, InjectMadvise));
  exports.Set("injectSimulated", Napi::Function::New(env, InjectSimulated));
}

}  // namespace ras::binding
