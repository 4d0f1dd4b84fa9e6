// A migration destination makes the source's lost frames lost here (engine.importLost,
// src/migration/import.ts): one huge page per call, whatever state the page is in. Its bytes are
// current in the file (nothing is poisoned here): a Normal page is split from the file with the
// frames guarded, as the journal replay re-splits a handed-over page; a Split page gets the frames
// guarded in place; a page under recovery is waited for (bounded), never raced. Never MADV_HWPOISON
// for a healthy page: the guard is the region's chosen one (a userfaultfd poison marker where it
// can), as recovery guards a lost subpage.
#include <errno.h>
#include <signal.h>
#include <sys/mman.h>

#include <vector>

#include "binding/args.h"
#include "binding/binding.h"
#include "binding/errors.h"
#include "capi/capi.h"
#include "capture/wait.h"
#include "split/lazy.h"
#include "split/mapping.h"
#include "split/props.h"
#include "split/recovery.h"
#include "state/state.h"

namespace ras::binding {

namespace {

struct Applied {
  bool busy = false;           // still under recovery after the wait (or the engine is paused)
  bool whole = false;          // the whole huge page is lost (asked, or the split failed)
  bool split_failed = false;   // a split was tried and failed: the page is lost whole
  uint32_t refuse = kEligible;
  int err = 0;
  const char* syscall = nullptr;
  int guard = HUGETLB_RAS_GUARD_NONE;
  std::vector<uint32_t> lost;  // subpages newly lost here (a split: every lost subpage), sorted
};

// Normal -> Lost, inaccessible first (as markLost). False if the page was not Normal.
bool LoseWhole(Region& r, uint32_t page, Applied* a) {
  if (!ClaimLost(r, page)) return false;
  if (mprotect(reinterpret_cast<void*>(r.PageAddress(page)), r.huge_size, PROT_NONE) != 0) {
    a->err = errno;
    a->syscall = "mprotect";
    UndoLost(r, page);
    return true;
  }
  capi::RecordLost(r, r.PageAddress(page), r.huge_size, BUS_MCEERR_AO);
  a->whole = true;
  return true;
}

// Normal -> Recovering -> Split (the frames guarded) or Lost. False if the page was not Normal.
bool SplitWithFrames(Region& r, uint32_t page, const std::vector<uint32_t>& subs, Applied* a) {
  if (!ClaimForReplay(r, page)) return false;
  recovery::Outcome out = recovery::SplitHugePage(r, page, subs, nullptr, true);
  uintptr_t page_addr = r.PageAddress(page);
  if (out.ok) {
    for (uint32_t s : out.lost) capi::RecordLost(r, page_addr + s * kSubpage, kSubpage, BUS_MCEERR_AO);
    a->lost = out.lost;
    a->guard = out.guard;
  } else {
    // Inaccessible before the state says Lost, as the replay's failed re-split does.
    if (mprotect(reinterpret_cast<void*>(page_addr), r.huge_size, PROT_NONE) != 0 && !a->err) {
      a->err = errno;
      a->syscall = "mprotect";
    }
    capi::RecordLost(r, page_addr, r.huge_size, BUS_MCEERR_AO);
    a->whole = true;
    a->split_failed = true;
    a->refuse = out.refuse;
    if (!a->err) {
      a->err = out.err;
      a->syscall = out.syscall;
    }
  }
  EndRecovery(r, page, out.ok);
  return true;
}

// A Split page: each frame not lost yet is recorded, marked and guarded in place (its bytes are
// never read again). Recorded first: the scan for dropped reports takes an unrecorded lost bit for
// a loss nobody reported.
void GuardInPlace(Region& r, uint32_t page, const std::vector<uint32_t>& subs, Applied* a) {
  lazy::WaitRegion(r);  // a lazy fill of this region holds its range registered: it ends first
  uintptr_t page_addr = r.PageAddress(page);
  int wanted = props::ChosenGuard(r);
  if (wanted == HUGETLB_RAS_GUARD_HWPOISON) wanted = HUGETLB_RAS_GUARD_FAULT;  // healthy memory: never poisoned
  for (uint32_t s : subs) {
    uintptr_t addr = page_addr + static_cast<uint64_t>(s) * kSubpage;
    if (r.SubpageLost(addr)) continue;
    capi::RecordLost(r, addr, kSubpage, BUS_MCEERR_AO);
    if (!r.MarkSubpageLost(addr)) continue;
    mapping::Failure f;
    int used = mapping::GuardSubpage(addr, wanted, &f);
    if (used != HUGETLB_RAS_GUARD_UFFD) r.guard.store(HUGETLB_RAS_GUARD_FAULT);  // weakest in use
    if (used < 0 && !a->err) {
      a->err = f.err;
      a->syscall = f.syscall;
    }
    if (used > a->guard) a->guard = used;
    a->lost.push_back(s);
  }
}

// importFrames(id, page, subpages, whole, timeoutMs)
Napi::Value ImportFrames(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint32_t page;
  Region* r = RegionPage(info, &page);
  if (!r) return env.Undefined();
  if (!info[2].IsArray()) {
    errors::Code(env, "ERR_INVALID_ARG", "subpages must be an array").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  Napi::Array arr = info[2].As<Napi::Array>();
  uint64_t per_page = r->huge_size / kSubpage;
  std::vector<uint32_t> subs;
  subs.reserve(arr.Length());
  for (uint32_t i = 0; i < arr.Length(); i++) {
    uint32_t s = arr.Get(i).As<Napi::Number>().Uint32Value();
    if (s < per_page) subs.push_back(s);
  }
  bool whole = info[3].ToBoolean().Value();
  uint64_t ms = 0;
  if (!Uint(env, info[4], "timeoutMs", &ms)) return env.Undefined();
  if (whole) {
    subs.clear();
    for (uint32_t s = 0; s < per_page; s++) subs.push_back(s);
  }
  Applied a;
  for (int tries = 0;; tries++) {
    uint32_t st = StateOf(r->Word(page).load(std::memory_order_acquire));
    if (st == kLost) break;  // every frame of it is lost already
    if (st == kPending || st == kRecovering) {
      if (tries > 64 || !signals::wait::WaitHandledFor(*r, page, static_cast<int>(ms))) {
        a.busy = true;
        break;
      }
      continue;
    }
    if (st == kSplit) {
      GuardInPlace(*r, page, subs, &a);
      break;
    }
    // Normal: a lane may take it meanwhile (a new report); then the loop waits for it.
    if (whole ? LoseWhole(*r, page, &a) : SplitWithFrames(*r, page, subs, &a)) break;
  }
  Napi::Object o = Napi::Object::New(env);
  o.Set("busy", a.busy);
  o.Set("whole", a.whole);
  o.Set("splitFailed", a.split_failed);
  o.Set("reason", a.refuse);
  o.Set("guard", a.guard);
  Napi::Array lost = Napi::Array::New(env, a.lost.size());
  for (size_t j = 0; j < a.lost.size(); j++) lost.Set(static_cast<uint32_t>(j), a.lost[j]);
  o.Set("lostSubpages", lost);
  if (a.err) {
    o.Set("errno", -a.err);
    o.Set("syscall", a.syscall ? a.syscall : "?");
  }
  return o;
}

}  // namespace

void RegisterImport(Napi::Env env, Napi::Object exports) {
  exports.Set("importFrames", Napi::Function::New(env, ImportFrames));
}

}  // namespace ras::binding
