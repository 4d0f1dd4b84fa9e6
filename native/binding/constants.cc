// The constants JS shares with the native code, from their one definition here (src/native.ts
// builds its PageState, NativeEventType, refuse-reason codes, ... from this object).
#include <signal.h>

#include "binding/binding.h"
#include "capture/access.h"
#include "hugetlb_ras.h"
#include "linux_compat.h"
#include "state/state.h"
#include "tojs/events.h"

namespace ras::binding {

namespace {

Napi::Object Group(Napi::Env env, std::initializer_list<std::pair<const char*, uint32_t>> members) {
  Napi::Object o = Napi::Object::New(env);
  for (const auto& m : members) o.Set(m.first, Napi::Number::New(env, m.second));
  o.Freeze();
  return o;
}

}  // namespace

void RegisterConstants(Napi::Env env, Napi::Object exports) {
  Napi::Object c = Napi::Object::New(env);
  c.Set("pageState", Group(env, {{"normal", kNormal},
                                 {"pending", kPending},
                                 {"recovering", kRecovering},
                                 {"split", kSplit},
                                 {"lost", kLost}}));
  c.Set("refuseReason", Group(env, {{"eligible", kEligible},
                                    {"sharedMapping", kSharedMapping},
                                    {"vhostUser", kVhostUser},
                                    {"ivshmem", kIvshmem},
                                    {"vfio", kVfio},
                                    {"kernelNoReadAround", kKernelNoReadAround},
                                    {"readBackFailed", kReadBackFailed},
                                    {"noMemory", kNoMemory}}));
  c.Set("eventType", Group(env, {{"poison", tojs::kPoison},
                                 {"recovered", tojs::kRecovered},
                                 {"refused", tojs::kRefused},
                                 {"subpageLost", tojs::kSubpageLost}}));
  c.Set("guard", Group(env, {{"none", HUGETLB_RAS_GUARD_NONE},
                             {"uffd", HUGETLB_RAS_GUARD_UFFD},
                             {"hwpoison", HUGETLB_RAS_GUARD_HWPOISON},
                             {"fault", HUGETLB_RAS_GUARD_FAULT}}));
  c.Set("fault", Group(env, {{"noSlot", static_cast<uint32_t>(-access::kFaultNoSlot)},
                             {"waitTimeout", static_cast<uint32_t>(-access::kFaultWaitTimeout)},
                             {"enginePaused", static_cast<uint32_t>(-access::kFaultEnginePaused)}}));
  c.Set("sigbus", Napi::Number::New(env, SIGBUS));
  c.Set("busMceerrAr", Napi::Number::New(env, BUS_MCEERR_AR));
  c.Set("busMceerrAo", Napi::Number::New(env, BUS_MCEERR_AO));
  c.Set("subpageSize", Napi::Number::New(env, static_cast<double>(kSubpage)));
  c.Set("hugetlbfsMagic", Napi::Number::New(env, static_cast<double>(HUGETLBFS_MAGIC)));
  c.Freeze();
  exports.Set("constants", c);
}

}  // namespace ras::binding
