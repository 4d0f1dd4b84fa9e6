// Recovery outside the report path: the journal replay of a restart (recoverNow, markLost) and
// the guest reset that puts a huge page back (restoreHugePage).
#include <errno.h>
#include <sys/mman.h>

#include <atomic>
#include <vector>

#include "binding/args.h"
#include "binding/binding.h"
#include "binding/errors.h"
#include "capi/capi.h"
#include "linux_compat.h"
#include "split/fileio.h"
#include "split/lazy.h"
#include "split/mapping.h"
#include "split/numa.h"
#include "split/props.h"
#include "split/recovery.h"
#include "state/state.h"

namespace ras::binding {

namespace {

// Re-protect a huge page known (from the journal) to have lost subpages, before anybody touches it.
Napi::Value RecoverNow(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint32_t page;
  Region* r = RegionPage(info, &page);
  if (!r) return env.Undefined();
  if (!info[2].IsArray()) {
    errors::Code(env, "ERR_INVALID_ARG", "knownLostSubpages must be an array").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  Napi::Array arr = info[2].As<Napi::Array>();
  std::vector<uint32_t> known;
  for (uint32_t i = 0; i < arr.Length(); i++) {
    uint32_t s = arr.Get(i).As<Napi::Number>().Uint32Value();
    if (s < r->huge_size / kSubpage) known.push_back(s);
  }
  if (!ClaimForReplay(*r, page)) {
    errors::Code(env, "ERR_PAGE_BUSY", "the huge page is already being handled").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  recovery::Outcome out = recovery::SplitHugePage(*r, page, known, nullptr);
  // Losses from before a restart: a vCPU loop asking next_lost() learns of them too (recorded
  // before the page shows Split, as the lanes do).
  uintptr_t page_addr = r->PageAddress(page);
  int guard_err = 0;
  if (out.ok) {
    for (uint32_t s : out.lost) capi::RecordLost(*r, page_addr + s * kSubpage, kSubpage, BUS_MCEERR_AO);
  } else {
    // The re-split failed: the handed-over file page is still mapped read-write, and its state is
    // about to say Lost. Inaccessible first, as markLost does: never a lost page that reads.
    if (mprotect(reinterpret_cast<void*>(page_addr), r->huge_size, PROT_NONE) != 0) guard_err = errno;
    capi::RecordLost(*r, page_addr, r->huge_size, BUS_MCEERR_AO);
  }
  EndRecovery(*r, page, out.ok);
  Napi::Object o = Napi::Object::New(env);
  o.Set("ok", out.ok);
  o.Set("guard", out.guard);
  o.Set("reason", static_cast<uint32_t>(out.refuse));
  Napi::Array lost = Napi::Array::New(env, out.lost.size());
  for (size_t j = 0; j < out.lost.size(); j++) lost.Set(static_cast<uint32_t>(j), out.lost[j]);
  o.Set("lostSubpages", lost);
  o.Set("bytes", static_cast<double>(out.bytes));
  o.Set("reads", out.reads);
  o.Set("durationNs", Napi::BigInt::New(env, out.ns));
  o.Set("errno", out.err);
  if (out.syscall) o.Set("syscall", out.syscall);
  if (guard_err) o.Set("guardErrno", guard_err);
  return o;
}

// A whole huge page the journal says is lost (refused before a restart): inaccessible again.
Napi::Value MarkLost(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint32_t p;
  Region* r = RegionPage(info, &p);
  if (!r) return env.Undefined();
  if (!ClaimLost(*r, p)) return env.Undefined();
  if (mprotect(reinterpret_cast<void*>(r->PageAddress(p)), r->huge_size, PROT_NONE) != 0) {
    int e = errno;
    UndoLost(*r, p);
    errors::Sys(env, e, "mprotect").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  capi::RecordLost(*r, r->PageAddress(p), r->huge_size, BUS_MCEERR_AO);
  return env.Undefined();
}

// Guest reset: punch the page out of the file and map a fresh huge page in its place; never in a
// region something else maps too.
// Tests: the reset finds no free huge page (as with an empty pool) and falls back to anonymous memory.
std::atomic<bool> g_reset_pool_empty{false};

Napi::Value TestResetPoolEmpty(const Napi::CallbackInfo& info) {
  g_reset_pool_empty.store(info.Length() > 0 && info[0].ToBoolean().Value());
  return info.Env().Undefined();
}

Napi::Value RestoreHugePage(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint32_t p;
  Region* r = RegionPage(info, &p);
  if (!r) return env.Undefined();
  // A lazy recovery still in progress in this region would swap its block in over the fresh huge
  // page: its back half ends first (it does not wait for JavaScript).
  lazy::WaitRegion(*r);
  uint32_t st = StateOf(r->Word(p).load());
  Napi::Object o = Napi::Object::New(env);
  if (st != kSplit && st != kLost) {
    o.Set("restored", false);
    o.Set("skipped", true);
    return o;
  }
  // Someone else maps this memory: punching the file makes the other process (share=on, a
  // vhost-user backend, an ivshmem peer) read zeros, and vfio keeps the old page pinned for the
  // device while the CPU would get a new one. The page stays as it is: lost, and said so.
  uint32_t reason = r->refuse_reason.load();
  if (reason == kSharedMapping || reason == kVhostUser || reason == kIvshmem || reason == kVfio) {
    o.Set("restored", false);
    o.Set("skipped", true);
    o.Set("reason", reason);
    return o;
  }
  uintptr_t target = r->PageAddress(p);
  uint64_t file_off = r->file_offset + (static_cast<uint64_t>(p) << r->huge_shift);
  int e = fileio::PunchHole(r->fd, r->dev, r->ino, file_off, r->huge_size);
  if (e != 0) {
    errors::Sys(env, e, "fallocate", "PUNCH_HOLE").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  // The fresh memory keeps the region's properties: its NUMA policy as it was, MADV_DONTDUMP, and
  // (anonymous fallback) the lock. The policy is read before anything replaces the page.
  numa::Policy pol = numa::PolicyAt(target);
  mapping::Failure mf;
  bool restored = false;
  if (g_reset_pool_empty.load()) {
    mf.err = ENOMEM;  // what a fault of the punched file page gets with no free huge page
    mf.syscall = "mmap";
  } else {
    restored = mapping::MapFreshHugePage(*r, file_off, target, pol, &mf);
  }
  bool anon = false;
  mapping::Failure af;
  if (!restored) anon = mapping::MapFreshAnonymous(*r, target, r->huge_size, pol, &af);
  if (restored || anon) {
    ResetPage(*r, p, restored);
    capi::Forget(*r, target, r->huge_size);  // a loss there from now on is a new one
  }
  props::Note(*r, true);  // the fresh page: marked after the fact where nothing was known
  o.Set("restored", restored);
  // Nothing could be mapped: the page is as it was (split or lost, its guards in place). Not
  // reported as reset: the ledger and the journal keep its losses.
  o.Set("skipped", !restored && !anon);
  if (!restored) {
    o.Set("errno", mf.err);
    o.Set("syscall", mf.syscall ? mf.syscall : "mmap");
    o.Set("stillSplit", anon);
  }
  return o;
}

}  // namespace

void RegisterRecoveryReset(Napi::Env env, Napi::Object exports) {
  exports.Set("recoverNow", Napi::Function::New(env, RecoverNow));
  exports.Set("markLost", Napi::Function::New(env, MarkLost));
  exports.Set("restoreHugePage", Napi::Function::New(env, RestoreHugePage));
  exports.Set("testResetPoolEmpty", Napi::Function::New(env, TestResetPoolEmpty));
}

}  // namespace ras::binding
