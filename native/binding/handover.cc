// Handover (live update): handoverPage writes one split huge page's current data back into its
// file (split/handover.h). Only for a Split page of a region nothing else maps; the page state does
// not change.
#include "binding/args.h"
#include "binding/binding.h"
#include "binding/errors.h"
#include "split/handover.h"
#include "state/state.h"

namespace ras::binding {

namespace {

// handoverPage(region id, huge page index) -> { ok, skipped, reason?, code?, errno, syscall?,
// punched, bytes, lostSubpages }. skipped: not a split page (nothing to hand over), or a region
// something else maps (`reason`, a RefuseReason: never punched).
Napi::Value HandoverPage(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint32_t page;
  Region* r = RegionPage(info, &page);
  if (!r) return env.Undefined();
  Napi::Object o = Napi::Object::New(env);
  o.Set("ok", false);
  o.Set("skipped", true);
  uint32_t reason = r->refuse_reason.load();
  if (reason == kSharedMapping || reason == kVhostUser || reason == kIvshmem || reason == kVfio) {
    o.Set("reason", reason);
    return o;
  }
  if (StateOf(r->Word(page).load()) != kSplit) return o;
  handover::Outcome out = handover::WriteBack(*r, page);
  o.Set("ok", out.ok);
  o.Set("skipped", false);
  if (out.code) o.Set("code", out.code);
  o.Set("errno", -out.err);
  if (out.syscall) o.Set("syscall", out.syscall);
  o.Set("punched", out.punched);
  o.Set("bytes", static_cast<double>(out.bytes));
  if (out.fault_addr) o.Set("faultAddress", Napi::BigInt::New(env, static_cast<uint64_t>(out.fault_addr)));
  Napi::Array lost = Napi::Array::New(env, out.lost.size());
  for (size_t j = 0; j < out.lost.size(); j++) lost.Set(static_cast<uint32_t>(j), out.lost[j]);
  o.Set("lostSubpages", lost);
  return o;
}

Napi::Value TestPoolEmpty(const Napi::CallbackInfo& info) {
  handover::TestPoolEmpty(info.Length() > 0 && info[0].ToBoolean().Value());
  return info.Env().Undefined();
}

Napi::Value TestFailCopyAfter(const Napi::CallbackInfo& info) {
  uint64_t bytes = 0;
  if (info.Length() > 0 && !Uint(info.Env(), info[0], "bytes", &bytes)) return info.Env().Undefined();
  handover::TestFailCopyAfter(bytes);
  return info.Env().Undefined();
}

}  // namespace

void RegisterHandover(Napi::Env env, Napi::Object exports) {
  exports.Set("handoverPage", Napi::Function::New(env, HandoverPage));
  exports.Set("testHandoverPoolEmpty", Napi::Function::New(env, TestPoolEmpty));
  exports.Set("testHandoverFailAfter", Napi::Function::New(env, TestFailCopyAfter));
}

}  // namespace ras::binding
