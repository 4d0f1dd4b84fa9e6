#include "capi/capi.h"

#include <errno.h>
#include <signal.h>

#include "linux_compat.h"

#include <cstring>
#include <mutex>
#include <set>
#include <tuple>
#include <utility>
#include <vector>

#include "capture/access.h"
#include "hugetlb_ras.h"
#include "split/uffd.h"

namespace ras::capi {

namespace {

std::mutex g_lost_mu;
std::vector<hugetlb_ras_lost> g_lost;  // every loss since the process started, in order found
// (region id, hva, size) of each loss of g_lost whose memory was not given back since (a guest
// reset forgets it): the duplicate check and IsRecorded in O(log n). A frame at a huge page's start
// and that whole huge page share the hva: the size tells them apart.
using LostKey = std::tuple<uint32_t, uint64_t, uint64_t>;
std::set<LostKey> g_lost_at;

void Describe(const Region& r, uintptr_t hva, hugetlb_ras_status* out) {
  uintptr_t sub = hva & ~(kSubpage - 1);
  uintptr_t huge = r.start + ((sub - r.start) & ~(r.huge_size - 1));
  out->region_id = r.id;
  out->hva = sub;
  out->gpa = r.guest_phys + (sub - r.start);
  out->huge_page_gpa = r.guest_phys + (huge - r.start);
  out->huge_page_size = r.huge_size;
}

// A failed check: the address is guest RAM (never NOT_RAM), the engine cannot say more.
int Fail(hugetlb_ras_status* out, int rc) {
  out->state = HUGETLB_RAS_UNKNOWN;
  return rc;
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
    if (probes++ >= 3) return Fail(out, -EAGAIN);  // memory errors that leave no trace: stale, retry
    char byte;
    access::Fault f;
    // The probe's own wait for a page under recovery is bounded by what is left of timeout_ms.
    uint64_t now = MonotonicNs();
    int left_ms = now >= deadline ? 0 : static_cast<int>((deadline - now + 999999ull) / 1000000ull);
    if (access::GuardedCopy(&byte, reinterpret_cast<const void*>(out->hva), 1, &f, left_ms)) {
      out->state = HUGETLB_RAS_HEALTHY;
      return 0;
    }
    if (f.signal == access::kFaultNoSlot) return Fail(out, -EAGAIN);  // no thread slot free
    if (f.signal < 0) continue;  // the probe's wait ended (paused, timed out): wait here instead
    // Not a memory error (a file truncated under the region, a SIGSEGV): the frame is not readable,
    // and nothing the engine can recover.
    if (f.signal != SIGBUS || (f.code != BUS_MCEERR_AR && f.code != BUS_MCEERR_AO)) return Fail(out, -EFAULT);
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

// copy_from_guest / copy_to_guest: the whole range inside one region of a live engine.
int CopyGuest(uint64_t gpa, void* buf, uint64_t len, uint64_t* lost, int timeout_ms, bool to) {
  if (!lost || (!buf && len > 0)) return -EINVAL;
  RegionRef ref = RegionRef::FindGpa(gpa);
  if (!ref) return -EINVAL;
  Region& r = *ref;
  uint64_t off = gpa - r.guest_phys;
  uint64_t size = r.end - r.start;
  if (len > size - off) return -EINVAL;
  if (len == 0) return 0;
  return access::CopyAvailable(r, r.start + off, buf, len, lost, to, timeout_ms);
}

int CopyFromGuest(uint64_t gpa, void* dst, uint64_t len, uint64_t* lost_bitmap, int timeout_ms) {
  return CopyGuest(gpa, dst, len, lost_bitmap, timeout_ms, false);
}

int CopyToGuest(uint64_t gpa, const void* src, uint64_t len, uint64_t* lost_bitmap, int timeout_ms) {
  return CopyGuest(gpa, const_cast<void*>(src), len, lost_bitmap, timeout_ms, true);
}

const hugetlb_ras_api g_api = {HUGETLB_RAS_API_VERSION, sizeof(hugetlb_ras_api), CheckHva, CheckGpa, NextLost,
                               CopyFromGuest, CopyToGuest};

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

bool RecordLost(const Region& r, uintptr_t hva, uint64_t size, int code) {
  hugetlb_ras_lost l = {};
  uintptr_t a = hva & ~(size - 1);
  l.hva = a;
  l.gpa = r.guest_phys + (a - r.start);
  l.size = size;
  l.region_id = r.id;
  l.code = code;
  std::lock_guard<std::mutex> lock(g_lost_mu);
  if (!g_lost_at.emplace(l.region_id, l.hva, l.size).second) return false;  // known (and not forgotten)
  g_lost.push_back(l);
  return true;
}

bool IsRecorded(const Region& r, uintptr_t hva) {
  // A loss is recorded as its 4 KiB frame or as its whole huge page.
  std::lock_guard<std::mutex> lock(g_lost_mu);
  return g_lost_at.count({r.id, hva & ~(kSubpage - 1), kSubpage}) || g_lost_at.count({r.id, hva & ~(r.huge_size - 1), r.huge_size});
}

void Forget(const Region& r, uintptr_t hva, uint64_t len) {
  std::lock_guard<std::mutex> lock(g_lost_mu);
  auto it = g_lost_at.lower_bound({r.id, hva, 0});
  while (it != g_lost_at.end() && std::get<0>(*it) == r.id && std::get<1>(*it) - hva < len && std::get<1>(*it) >= hva) it = g_lost_at.erase(it);
}

void Register(Napi::Env env, Napi::Object exports) {
  exports.Set("nativeApi", Napi::Function::New(env, NativeApi));
  exports.Set("uffdInfo", Napi::Function::New(env, UffdInfo));
}

}  // namespace ras::capi

extern "C" __attribute__((visibility("default"))) const hugetlb_ras_api* hugetlb_ras_get_api(void) {
  return &ras::capi::g_api;
}
