// The journal replay of a restart, many huge pages in one call (recoverMany): the handed-over
// pages of a region are re-split from their file by several threads at once (as many as
// readThreads), instead of one recoverNow per page on the JS thread. Reading back the huge pages
// is most of a restart with many of them; one thread does not saturate memory.
#include <errno.h>
#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <thread>
#include <vector>

#include "binding/args.h"
#include "binding/binding.h"
#include "binding/errors.h"
#include "capi/capi.h"
#include "linux_compat.h"
#include "split/recovery.h"
#include "state/state.h"

namespace ras::binding {

namespace {

struct ReplayJob {
  uint32_t page = 0;
  std::vector<uint32_t> known;
  bool busy = false;  // someone else handles the page: not touched
  recovery::Outcome out;
  int guard_err = 0;
};

// As recoverNow: the page (claimed) is split, its losses recorded for next_lost() before it
// shows Split; a failed split leaves it inaccessible and lost whole.
void SplitClaimed(Region& r, ReplayJob& j) {
  j.out = recovery::SplitHugePage(r, j.page, j.known, nullptr);
  uintptr_t page_addr = r.PageAddress(j.page);
  if (j.out.ok) {
    for (uint32_t s : j.out.lost) capi::RecordLost(r, page_addr + s * kSubpage, kSubpage, BUS_MCEERR_AO);
  } else {
    if (mprotect(reinterpret_cast<void*>(page_addr), r.huge_size, PROT_NONE) != 0) j.guard_err = errno;
    capi::RecordLost(r, page_addr, r.huge_size, BUS_MCEERR_AO);
  }
  EndRecovery(r, j.page, j.out.ok);
}

void Work(Region* r, std::vector<ReplayJob>* jobs, std::atomic<size_t>* next) {
  for (;;) {
    size_t i = next->fetch_add(1);
    if (i >= jobs->size()) return;
    if (!(*jobs)[i].busy) SplitClaimed(*r, (*jobs)[i]);
  }
}

bool ParseJobs(Napi::Env env, Region& r, const Napi::Value& pv, const Napi::Value& lv, std::vector<ReplayJob>* jobs) {
  if (!pv.IsArray() || !lv.IsArray() || pv.As<Napi::Array>().Length() != lv.As<Napi::Array>().Length()) {
    errors::Code(env, "ERR_INVALID_ARG", "pages and knownLostSubpages must be arrays of the same length").ThrowAsJavaScriptException();
    return false;
  }
  Napi::Array pages = pv.As<Napi::Array>();
  Napi::Array lost = lv.As<Napi::Array>();
  jobs->resize(pages.Length());
  for (uint32_t i = 0; i < pages.Length(); i++) {
    uint64_t p;
    if (!Uint(env, pages.Get(i), "page", &p)) return false;
    Napi::Value l = lost.Get(i);
    if (p >= r.pages || !l.IsArray()) {
      errors::Code(env, "ERR_OUT_OF_RANGE", "page outside the region, or its known lost subpages not an array").ThrowAsJavaScriptException();
      return false;
    }
    ReplayJob& j = (*jobs)[i];
    j.page = static_cast<uint32_t>(p);
    Napi::Array arr = l.As<Napi::Array>();
    j.known.reserve(arr.Length());
    for (uint32_t k = 0; k < arr.Length(); k++) {
      uint32_t s = arr.Get(k).As<Napi::Number>().Uint32Value();
      if (s < r.huge_size / kSubpage) j.known.push_back(s);
    }
  }
  return true;
}

Napi::Object OutcomeObject(Napi::Env env, const ReplayJob& j) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("page", j.page);
  if (j.busy) {
    o.Set("ok", false);
    o.Set("busy", true);
    return o;
  }
  o.Set("ok", j.out.ok);
  o.Set("guard", j.out.guard);
  o.Set("reason", static_cast<uint32_t>(j.out.refuse));
  Napi::Array lost = Napi::Array::New(env, j.out.lost.size());
  for (size_t k = 0; k < j.out.lost.size(); k++) lost.Set(static_cast<uint32_t>(k), j.out.lost[k]);
  o.Set("lostSubpages", lost);
  o.Set("bytes", static_cast<double>(j.out.bytes));
  o.Set("durationNs", Napi::BigInt::New(env, j.out.ns));
  o.Set("errno", j.out.err);
  if (j.out.syscall) o.Set("syscall", j.out.syscall);
  if (j.guard_err) o.Set("guardErrno", j.guard_err);
  return o;
}

// recoverMany(id, pages, knownLostSubpages[][]): one outcome per page, in order (as recoverNow's,
// plus `page`; `busy: true` for a page someone else was handling, left as it was).
Napi::Value RecoverMany(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Region* r = RegionById(env, info[0]);
  if (!r) return env.Undefined();
  std::vector<ReplayJob> jobs;
  if (!ParseJobs(env, *r, info[1], info[2], &jobs)) return env.Undefined();
  for (ReplayJob& j : jobs) j.busy = !ClaimForReplay(*r, j.page);  // a page named twice: the second is busy
  size_t threads = std::min<size_t>(static_cast<size_t>(recovery::ReadThreads()), jobs.size());
  std::atomic<size_t> next{0};
  std::vector<std::thread> helpers;
  for (size_t t = 1; t < threads; t++) helpers.push_back(SpawnThread(Work, r, &jobs, &next));
  Work(r, &jobs, &next);
  for (std::thread& t : helpers) t.join();
  Napi::Array out = Napi::Array::New(env, jobs.size());
  for (size_t i = 0; i < jobs.size(); i++) out.Set(static_cast<uint32_t>(i), OutcomeObject(env, jobs[i]));
  return out;
}

}  // namespace

void RegisterReplay(Napi::Env env, Napi::Object exports) { exports.Set("recoverMany", Napi::Function::New(env, RecoverMany)); }

}  // namespace ras::binding
