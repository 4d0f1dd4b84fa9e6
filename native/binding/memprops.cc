// The properties of guest memory a replacement keeps (split/props.h) to JS: the VMM's declaration
// that a region is locked (Region.lockMemory, which locks it too), and what was carried or not.
#include <errno.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "binding/args.h"
#include "binding/binding.h"
#include "binding/errors.h"
#include "split/props.h"

#ifndef MLOCK_ONFAULT
#define MLOCK_ONFAULT 1
#endif

namespace ras::binding {

namespace {
// lockRegion(id, mode): 0 unlock, 1 mlock (populates), 2 mlock2(MLOCK_ONFAULT). The kernel keeps no
// trace of a lock on hugetlb memory, so the engine records it: every replacement of the region is
// locked the same way. Nothing is recorded when the syscall fails.
Napi::Value LockRegion(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Region* r = RegionById(env, info[0]);
  if (!r) return env.Undefined();
  uint64_t mode = 0;
  if (!Uint(env, info[1], "mode", &mode)) return env.Undefined();
  void* a = reinterpret_cast<void*>(r->start);
  uint64_t len = r->end - r->start;
  int rc;
  const char* sc;
  if (mode == props::kUnlocked) {
    rc = munlock(a, len);
    sc = "munlock";
  } else if (mode == props::kLocked) {
    rc = mlock(a, len);
    sc = "mlock";
  } else {
    rc = static_cast<int>(syscall(SYS_mlock2, a, len, MLOCK_ONFAULT));
    sc = "mlock2";
  }
  if (rc != 0) {
    errors::Sys(env, errno, sc).ThrowAsJavaScriptException();
    return env.Undefined();
  }
  props::SetRegionLock(*r, static_cast<props::Lock>(mode));
  return env.Undefined();
}

Napi::Value MemPropsInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  props::Counters c = props::GetCounters();
  Napi::Object o = Napi::Object::New(env);
  props::Lock fl = props::FutureLock();
  o.Set("futureLock", fl == props::kLocked ? "on" : fl == props::kLockedOnFault ? "on-fault" : "off");
  o.Set("lockedEager", static_cast<double>(c.locked_eager));
  o.Set("lockFailures", static_cast<double>(c.lock_failures));
  o.Set("lockErrno", c.lock_errno);
  o.Set("dontDumpMarked", static_cast<double>(c.dontdump_marked));
  o.Set("foreignUffd", static_cast<double>(c.foreign_uffd));
  return o;
}
}  // namespace

void RegisterMemProps(Napi::Env env, Napi::Object exports) {
  exports.Set("lockRegion", Napi::Function::New(env, LockRegion));
  exports.Set("memPropsInfo", Napi::Function::New(env, MemPropsInfo));
}

}  // namespace ras::binding
