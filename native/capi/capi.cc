#include "capi/capi.h"

#include <errno.h>
#include <signal.h>

#include <cstring>
#include <mutex>
#include <set>
#include <utility>
#include <vector>

#include "capture/access.h"
#include "hugetlb_ras.h"
#include "split/uffd.h"

namespace ras::capi {

namespace {

std::mutex g_lost_mu;
std::vector<hugetlb_ras_lost> g_lost;  // every loss since the process started, in order found
std::set<std::pair<uint32_t, uint64_t>> g_lost_at;  // (region id, hva) of each of g_lost: IsRecorded in O(log n)

void Describe(const Region& r, uintptr_t hva, hugetlb_ras_status* out) {
  uintptr_t sub = hva & ~(kSubpage - 1);
  uintptr_t huge = r.start + ((sub - r.start) & ~(r.huge_size - 1));
  out->region_id = r.id;
  out->hva = sub;
  out->gpa = r.guest_phys + (sub - r.start);
  out->huge_page_gpa = r.guest_phys + (huge - r.start);
  out->huge_page_size = r.huge_size;
}

// What is at `hva`. Only a read proves a frame healthy: for memory the engine has no loss on
// record for, it reads one byte through the guarded accessor, so a poison found that way goes
// through the signal handler like any other report (and is recovered before the answer).
// `ref` holds the region for the whole call: removal waits for it (and tells it to stop waiting).
int CheckHeld(const RegionRef& ref, uint64_t hva, int timeout_ms, hugetlb_ras_status* out) {
  Region* r = ref.get();
  Describe(*r, static_cast<uintptr_t>(hva), out);
  out->code = 4;  // BUS_MCEERR_AR: the caller touched it
  uint32_t page = r->PageIndex(static_cast<uintptr_t>(hva));
  uint64_t deadline = MonotonicNs() + static_cast<uint64_t>(timeout_ms < 0 ? 0 : timeout_ms) * 1000000ull;
  for (int probes = 0;;) {
    if (r->removed.load(std::memory_order_acquire)) {
      memset(out, 0, sizeof *out);
      return 0;  // unmapped meanwhile
    }
    std::atomic<uint32_t>& w = r->Word(page);
    uint32_t word = w.load(std::memory_order_acquire);
    uint32_t st = StateOf(word);
    if (st == kPending || st == kRecovering) {
      uint64_t now = MonotonicNs();
      if (now >= deadline) {
        out->state = HUGETLB_RAS_RECOVERING;
        return 0;
      }
      uint64_t left_ms = (deadline - now) / 1000000ull + 1;
      FutexWait(&w, word, static_cast<int>(left_ms < 20 ? left_ms : 20));
      continue;
    }
    if (st == kLost) {
      out->state = HUGETLB_RAS_LOST;
      out->whole_huge_page = 1;
      out->guard = HUGETLB_RAS_GUARD_NONE;
      return 0;
    }
    if (st == kSplit && r->SubpageLost(static_cast<uintptr_t>(hva))) {
      out->state = HUGETLB_RAS_LOST;
      out->guard = static_cast<uint32_t>(r->guard.load(std::memory_order_relaxed));
      return 0;
    }
    if (probes++ >= 3) return -EAGAIN;  // faults the engine cannot explain: not a memory error
    char byte;
    access::Fault f;
    if (access::GuardedCopy(&byte, reinterpret_cast<const void*>(out->hva), 1, &f)) {
      out->state = HUGETLB_RAS_HEALTHY;
      return 0;
    }
    if (f.signal == access::kFaultNoSlot) return -EAGAIN;  // no thread slot free
    if (f.signal < 0) continue;  // the probe's wait ended (paused, timed out): wait here instead
    if (f.signal != SIGBUS) return -EFAULT;
    // A memory error: the handler has recorded it (pending, or a lost subpage): look again.
  }
}

int CheckHva(uint64_t hva, int timeout_ms, hugetlb_ras_status* out) {
  if (!out) return -EINVAL;
  memset(out, 0, sizeof *out);
  RegionRef ref = RegionRef::Find(static_cast<uintptr_t>(hva));
  if (!ref) return 0;  // HUGETLB_RAS_NOT_RAM
  return CheckHeld(ref, hva, timeout_ms, out);
}

int CheckGpa(uint64_t gpa, int timeout_ms, hugetlb_ras_status* out) {
  if (!out) return -EINVAL;
  memset(out, 0, sizeof *out);
  RegionRef ref = RegionRef::FindGpa(gpa);
  if (!ref) return 0;
  return CheckHeld(ref, ref->start + (gpa - ref->guest_phys), timeout_ms, out);
}

int NextLost(uint64_t* cursor, hugetlb_ras_lost* out, int max) {
  if (!cursor || (!out && max > 0) || max < 0) return -EINVAL;
  std::lock_guard<std::mutex> lock(g_lost_mu);
  int n = 0;
  while (n < max && *cursor < g_lost.size()) out[n++] = g_lost[(*cursor)++];
  return n;
}

const hugetlb_ras_api g_api = {HUGETLB_RAS_API_VERSION, sizeof(hugetlb_ras_api), CheckHva, CheckGpa, NextLost};

const char* KindName(uffd::Kind k) {
  switch (k) {
    case uffd::kUserModeOnly: return "user-mode-only";
    case uffd::kFull: return "full";
    default: return "none";
  }
}

Napi::Value NativeApi(const Napi::CallbackInfo& info) {
  return Napi::BigInt::New(info.Env(), static_cast<uint64_t>(reinterpret_cast<uintptr_t>(&g_api)));
}

Napi::Value UffdInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uffd::Info u = uffd::Open();
  Napi::Object o = Napi::Object::New(env);
  o.Set("kind", KindName(u.kind));
  o.Set("errno", u.err);
  if (u.syscall) o.Set("syscall", u.syscall);
  return o;
}

}  // namespace

void RecordLost(const Region& r, uintptr_t hva, uint64_t size, int code) {
  hugetlb_ras_lost l = {};
  uintptr_t a = hva & ~(size - 1);
  l.hva = a;
  l.gpa = r.guest_phys + (a - r.start);
  l.size = size;
  l.region_id = r.id;
  l.code = code;
  std::lock_guard<std::mutex> lock(g_lost_mu);
  g_lost.push_back(l);
  g_lost_at.emplace(l.region_id, l.hva);
}

bool IsRecorded(const Region& r, uintptr_t hva) {
  // A loss is recorded as its 4 KiB frame or as its whole huge page.
  std::lock_guard<std::mutex> lock(g_lost_mu);
  return g_lost_at.count({r.id, hva & ~(kSubpage - 1)}) || g_lost_at.count({r.id, hva & ~(r.huge_size - 1)});
}

void Register(Napi::Env env, Napi::Object exports) {
  exports.Set("nativeApi", Napi::Function::New(env, NativeApi));
  exports.Set("uffdInfo", Napi::Function::New(env, UffdInfo));
}

}  // namespace ras::capi

extern "C" __attribute__((visibility("default"))) const hugetlb_ras_api* hugetlb_ras_get_api(void) {
  return &ras::capi::g_api;
}
