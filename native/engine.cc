// The JS-facing calls of the engine: argument checks (cheap re-checks of what TypeScript already
// validated), and the glue to the registry, mapping, file I/O, recovery and the simulation.
#include "engine.h"

#include <errno.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <memory>
#include <mutex>
#include <vector>

#include "access.h"
#include "capi.h"
#include "errors.h"
#include "fileio.h"
#include "mapping.h"
#include "recovery.h"
#include "registry.h"
#include "signals.h"
#include "simulate.h"
#include "vcpu.h"
#include "worker.h"

#ifndef MADV_HWPOISON
#define MADV_HWPOISON 100
#endif
#ifndef BUS_MCEERR_AR
#define BUS_MCEERR_AR 4
#endif
#ifndef BUS_MCEERR_AO
#define BUS_MCEERR_AO 5
#endif

namespace ras::engine {

namespace {

uint32_t g_next_region_id = 1;
int g_open_engines = 0;
// Page-state arrays of removed regions: a handler may still be reading them, so they are freed
// only when the last engine closes and no handler can be inside a region any more.
std::vector<std::pair<std::atomic<uint32_t>*, std::atomic<uint64_t>*>> g_graveyard;

Region* RegionById(Napi::Env env, const Napi::Value& v) {
  if (!v.IsNumber()) {
    errors::Code(env, "ERR_INVALID_ARG", "region id must be a number").ThrowAsJavaScriptException();
    return nullptr;
  }
  if (Region* r = FindRegionById(v.As<Napi::Number>().Uint32Value())) return r;
  errors::Code(env, "ERR_REGION_CLOSED", "no such region (unmapped or engine closed)").ThrowAsJavaScriptException();
  return nullptr;
}

bool Uint(Napi::Env env, const Napi::Value& v, const char* what, uint64_t* out) {
  if (!v.IsNumber()) {
    errors::Code(env, "ERR_INVALID_ARG", std::string(what) + " must be a number").ThrowAsJavaScriptException();
    return false;
  }
  double d = v.As<Napi::Number>().DoubleValue();
  if (!(d >= 0) || d > 9007199254740991.0 || d != static_cast<double>(static_cast<uint64_t>(d))) {
    errors::Code(env, "ERR_OUT_OF_RANGE", std::string(what) + " must be a non-negative integer")
        .ThrowAsJavaScriptException();
    return false;
  }
  *out = static_cast<uint64_t>(d);
  return true;
}

bool InRange(Napi::Env env, Region& r, uint64_t off, uint64_t len) {
  uint64_t size = r.end - r.start;
  if (off > size || len > size - off) {
    errors::Code(env, "ERR_OUT_OF_RANGE", "offset/length outside the region").ThrowAsJavaScriptException();
    return false;
  }
  return true;
}

Napi::Value NoSlot(Napi::Env env) {
  errors::Code(env, "ERR_TOO_MANY_THREADS", "no thread slot free for a guarded access (too many vCPU threads)")
      .ThrowAsJavaScriptException();
  return env.Undefined();
}

Napi::Value FaultObject(Napi::Env env, const access::Fault& f) {
  if (f.signal == -1) return NoSlot(env);
  Napi::Object o = Napi::Object::New(env);
  o.Set("fault", Napi::BigInt::New(env, static_cast<uint64_t>(f.addr)));
  o.Set("signal", f.signal);
  o.Set("code", f.code);
  return o;
}

// --- engine lifecycle -------------------------------------------------------------------------

napi_env g_env = nullptr;  // the JS environment whose engines are open
void EnvCleanup(void*);

Napi::Value Init(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsFunction()) {
    errors::Code(env, "ERR_INVALID_ARG", "init(callback)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  if (g_open_engines == 0) {
    g_main_tid = Gettid();
    if (!worker::Start(env, info[0].As<Napi::Function>())) {
      errors::Code(env, "ERR_ENGINE_IN_OTHER_THREAD",
                   "an engine is already open in another JS thread of this process")
          .ThrowAsJavaScriptException();
      return env.Undefined();
    }
    simulate::Enable();
    if (!signals::Install()) {
      int e = errno;
      worker::Stop();
      errors::Sys(env, e, "sigaction").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    g_env = env;
    napi_add_env_cleanup_hook(env, EnvCleanup, nullptr);
  } else if (g_env != static_cast<napi_env>(env)) {
    errors::Code(env, "ERR_ENGINE_IN_OTHER_THREAD", "an engine is already open in another JS thread of this process")
        .ThrowAsJavaScriptException();
    return env.Undefined();
  }
  g_open_engines++;
  return env.Undefined();
}

void RemoveRegion(Region& r) {
  r.live.store(2);
  // A recovery lane may be working on it right now (it sees live != 1 only when it starts).
  while (r.busy.load(std::memory_order_acquire) > 0) usleep(200);
  // A deleted file's pages die with its last mapping, poisoned ones included (as in the kernel):
  // a later file that gets the same inode number must not inherit simulated poison.
  struct stat st;
  if (fstat(r.fd, &st) == 0 && st.st_nlink == 0) simulate::ForgetFileRange(r.dev, r.ino, 0, UINT64_MAX / 2);
  // Release every thread waiting on this region: the region is gone, they retry and fail as
  // they would without us.
  for (uint32_t p = 0; p < r.pages; p++) FutexWakeAll(&r.Word(p));
  simulate::ForgetAddressRange(r.start, r.end);
  mapping::Unmap(reinterpret_cast<void*>(r.start), r.end - r.start);
  close(r.fd);
  // Not nulled: a signal handler that found the region a moment ago may still read them.
  g_graveyard.push_back({r.page_words, r.lost_bits});
  r.live.store(0);
}

// Everything the engines of this process hold: stop the threads, unmap, restore the handlers.
void ShutdownAll() {
  if (g_open_engines == 0) return;
  g_open_engines = 0;
  worker::Stop();  // no report is processed past here
  for (int i = 0; i < kMaxRegions; i++)
    if (Regions()[i].live.load() == 1) RemoveRegion(Regions()[i]);
  signals::Uninstall();
  for (auto& g : g_graveyard) {
    delete[] g.first;
    delete[] g.second;
  }
  g_graveyard.clear();
  g_paused.store(0);
}

// The JS environment that opened the engines is going away (worker thread ended, process exit)
// without close(): leave no thread, mapping or signal handler behind.
void EnvCleanup(void*) {
  ShutdownAll();
  g_env = nullptr;
}

Napi::Value Shutdown(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (g_open_engines == 0) return env.Undefined();
  if (g_open_engines > 1) {
    g_open_engines--;
    return env.Undefined();
  }
  ShutdownAll();
  if (g_env) napi_remove_env_cleanup_hook(g_env, EnvCleanup, nullptr);
  g_env = nullptr;
  return env.Undefined();
}

// --- regions ------------------------------------------------------------------------------------

Napi::Value MapRegion(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint64_t size, offset;
  uint64_t reason, guard;
  bool lossless = false;
  if (info.Length() < 6 || !info[0].IsString() || !Uint(env, info[1], "size", &size) ||
      !Uint(env, info[2], "offset", &offset) || !Uint(env, info[3], "refuseReason", &reason) ||
      !Uint(env, info[4], "guard", &guard) || !info[5].IsBigInt() || guard < HUGETLB_RAS_GUARD_UFFD ||
      guard > HUGETLB_RAS_GUARD_FAULT) {
    if (!env.IsExceptionPending())
      errors::Code(env, "ERR_INVALID_ARG", "mapRegion(path, size, offset, refuseReason, guard, guestPhysAddr)")
          .ThrowAsJavaScriptException();
    return env.Undefined();
  }
  uint64_t guest_phys = info[5].As<Napi::BigInt>().Uint64Value(&lossless);
  if (!lossless) {
    errors::Code(env, "ERR_OUT_OF_RANGE", "guestPhysAddr must fit 64 bits").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  if (g_open_engines == 0) {
    errors::Code(env, "ERR_ENGINE_CLOSED", "the engine is closed").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  std::string path = info[0].As<Napi::String>().Utf8Value();
  fileio::FileInfo fi;
  fileio::Failure ff;
  if (size == 0 || !fileio::OpenHugetlbFile(path, offset + size, &fi, &ff)) {
    if (size == 0)
      errors::Code(env, "ERR_SIZE_ALIGNMENT", "size must be a positive multiple of the huge page size").ThrowAsJavaScriptException();
    else if (ff.code)
      errors::Code(env, ff.code, path + " is not a regular file on hugetlbfs").ThrowAsJavaScriptException();
    else
      errors::Sys(env, ff.err, ff.syscall, path.c_str()).ThrowAsJavaScriptException();
    return env.Undefined();
  }
  auto fail = [&](Napi::Error e) {
    // Leave an existing file as it was: no size we gave it for this failed call.
    if (!fi.created && fi.file_size > fi.original_size) {
      int ignored = ftruncate(fi.fd, static_cast<off_t>(fi.original_size));
      (void)ignored;
    }
    close(fi.fd);
    if (fi.created) unlink(path.c_str());
    e.ThrowAsJavaScriptException();
    return env.Undefined();
  };
  if (size % fi.huge_size != 0 || offset % fi.huge_size != 0)
    return fail(errors::Code(env, "ERR_SIZE_ALIGNMENT", "size and offset must be multiples of the huge page size (" +
                                                            std::to_string(fi.huge_size) + ")"));
  int slot = -1;
  for (int i = 0; i < kMaxRegions && slot < 0; i++) {
    int expected = 0;
    if (Regions()[i].live.compare_exchange_strong(expected, 2)) slot = i;
  }
  if (slot < 0) return fail(errors::Code(env, "ERR_TOO_MANY_REGIONS", "at most 64 regions"));
  mapping::Failure mf;
  void* addr = mapping::MapShared(fi.fd, size, offset, &mf);
  if (!addr) {
    Regions()[slot].live.store(0);
    return fail(errors::Sys(env, mf.err, mf.syscall, path.c_str()));
  }
  Region& r = Regions()[slot];
  r.id = g_next_region_id++;
  r.start = reinterpret_cast<uintptr_t>(addr);
  r.end = r.start + size;
  r.huge_size = fi.huge_size;
  r.huge_shift = static_cast<uint32_t>(__builtin_ctzll(fi.huge_size));
  r.fd = fi.fd;
  r.dev = fi.dev;
  r.ino = fi.ino;
  r.file_offset = offset;
  r.pages = static_cast<uint32_t>(size / fi.huge_size);
  r.lost_words_per_page = static_cast<uint32_t>((fi.huge_size / kSubpage + 63) / 64);
  r.page_words = new std::atomic<uint32_t>[r.pages]();
  r.lost_bits = new std::atomic<uint64_t>[static_cast<size_t>(r.pages) * r.lost_words_per_page]();
  // The policy is armed before the region goes live: a report can never find it undecided.
  r.refuse_reason.store(static_cast<uint32_t>(reason));
  r.guard.store(static_cast<int>(guard));
  r.guest_phys = guest_phys;
  r.live.store(1, std::memory_order_release);
  Napi::Object o = Napi::Object::New(env);
  o.Set("id", r.id);
  o.Set("address", Napi::BigInt::New(env, static_cast<uint64_t>(r.start)));
  o.Set("hugePageSize", static_cast<double>(fi.huge_size));
  o.Set("created", fi.created);
  o.Set("originalSize", static_cast<double>(fi.original_size));
  o.Set("dev", static_cast<double>(fi.dev));
  o.Set("ino", static_cast<double>(fi.ino));
  o.Set("bookkeepingBytes", static_cast<double>(r.pages * sizeof(uint32_t) +
                                                static_cast<uint64_t>(r.pages) * r.lost_words_per_page * 8 +
                                                sizeof(Region)));
  return o;
}

Napi::Value UnmapRegion(const Napi::CallbackInfo& info) {
  Region* r = RegionById(info.Env(), info[0]);
  if (r) RemoveRegion(*r);
  return info.Env().Undefined();
}

Napi::Value Read(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Region* r = RegionById(env, info[0]);
  uint64_t off, len;
  if (!r || !Uint(env, info[1], "offset", &off) || !Uint(env, info[2], "length", &len) || !InRange(env, *r, off, len))
    return env.Undefined();
  Napi::Buffer<char> buf = Napi::Buffer<char>::New(env, len);
  access::Fault f;
  if (!access::GuardedCopy(buf.Data(), reinterpret_cast<void*>(r->start + off), len, &f)) return FaultObject(env, f);
  return buf;
}

Napi::Value Write(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Region* r = RegionById(env, info[0]);
  uint64_t off;
  if (!r || !Uint(env, info[1], "offset", &off)) return env.Undefined();
  if (!info[2].IsBuffer()) {
    errors::Code(env, "ERR_INVALID_ARG", "bytes must be a Buffer").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  Napi::Buffer<char> buf = info[2].As<Napi::Buffer<char>>();
  if (!InRange(env, *r, off, buf.Length())) return env.Undefined();
  access::Fault f;
  // Refuse before writing anything if the range touches memory known to be gone.
  if (uintptr_t bad = buf.Length() ? access::FirstKnownUnusable(*r, r->start + off, buf.Length()) : 0) {
    f = {bad, SIGBUS, BUS_MCEERR_AR};
    return FaultObject(env, f);
  }
  if (!access::GuardedCopy(reinterpret_cast<void*>(r->start + off), buf.Data(), buf.Length(), &f))
    return FaultObject(env, f);
  return env.Undefined();
}

Napi::Value FillPattern(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Region* r = RegionById(env, info[0]);
  uint64_t seed;
  if (!r || !Uint(env, info[1], "seed", &seed)) return env.Undefined();
  access::Fault f;
  if (!access::GuardedFillPattern(*r, seed, &f)) return FaultObject(env, f);
  return env.Undefined();
}

Napi::Value VerifyPattern(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Region* r = RegionById(env, info[0]);
  uint64_t seed;
  if (!r || !Uint(env, info[1], "seed", &seed)) return env.Undefined();
  constexpr uint64_t kMax = 1 << 20;
  std::unique_ptr<uint64_t[]> bad(new uint64_t[kMax]);
  access::Verify v = access::VerifyPattern(*r, seed, bad.get(), kMax);
  if (!v.ok) return NoSlot(env);
  Napi::Object o = Napi::Object::New(env);
  o.Set("checkedBytes", static_cast<double>(v.checked));
  o.Set("wrongBytes", static_cast<double>(v.wrong));
  o.Set("firstWrongOffset", static_cast<double>(v.first_wrong));
  uint64_t n = v.unreadable_count < kMax ? v.unreadable_count : kMax;
  Napi::Array arr = Napi::Array::New(env, n);
  for (uint64_t i = 0; i < n; i++) arr.Set(static_cast<uint32_t>(i), static_cast<double>(bad[i]));
  o.Set("unreadableOffsets", arr);
  o.Set("unreadableCount", static_cast<double>(v.unreadable_count));
  return o;
}

// --- poison injection ------------------------------------------------------------------------

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

// --- recovery outside the report path --------------------------------------------------------

// Re-protect a huge page known (from the journal) to have lost subpages, before anybody touches it.
Napi::Value RecoverNow(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Region* r = RegionById(env, info[0]);
  uint64_t page;
  if (!r || !Uint(env, info[1], "page", &page)) return env.Undefined();
  if (page >= r->pages || !info[2].IsArray()) {
    errors::Code(env, "ERR_OUT_OF_RANGE", "page outside the region").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  Napi::Array arr = info[2].As<Napi::Array>();
  std::vector<uint32_t> known;
  for (uint32_t i = 0; i < arr.Length(); i++) {
    uint32_t s = arr.Get(i).As<Napi::Number>().Uint32Value();
    if (s < r->huge_size / kSubpage) known.push_back(s);
  }
  std::atomic<uint32_t>& w = r->Word(static_cast<uint32_t>(page));
  uint32_t word = w.load();
  if (StateOf(word) != kNormal || !w.compare_exchange_strong(word, NextWord(word, kRecovering))) {
    errors::Code(env, "ERR_PAGE_BUSY", "the huge page is already being handled").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  recovery::Outcome out = recovery::SplitHugePage(*r, static_cast<uint32_t>(page), known, nullptr);
  SetPageState(*r, static_cast<uint32_t>(page), out.ok ? kSplit : kLost);
  // Losses from before a restart: a vCPU loop asking next_lost() learns of them too.
  uintptr_t page_addr = r->PageAddress(static_cast<uint32_t>(page));
  if (out.ok)
    for (uint32_t s : out.lost) capi::RecordLost(*r, page_addr + s * kSubpage, kSubpage, BUS_MCEERR_AO);
  else
    capi::RecordLost(*r, page_addr, r->huge_size, BUS_MCEERR_AO);
  Napi::Object o = Napi::Object::New(env);
  o.Set("ok", out.ok);
  o.Set("guard", out.guard);
  o.Set("reason", static_cast<uint32_t>(out.refuse));
  Napi::Array lost = Napi::Array::New(env, out.lost.size());
  for (size_t j = 0; j < out.lost.size(); j++) lost.Set(static_cast<uint32_t>(j), out.lost[j]);
  o.Set("lostSubpages", lost);
  o.Set("bytes", static_cast<double>(out.bytes));
  o.Set("durationNs", Napi::BigInt::New(env, out.ns));
  o.Set("errno", out.err);
  if (out.syscall) o.Set("syscall", out.syscall);
  return o;
}

// A whole huge page the journal says is lost (refused before a restart): inaccessible again.
Napi::Value MarkLost(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Region* r = RegionById(env, info[0]);
  uint64_t page;
  if (!r || !Uint(env, info[1], "page", &page)) return env.Undefined();
  if (page >= r->pages) {
    errors::Code(env, "ERR_OUT_OF_RANGE", "page outside the region").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  uint32_t p = static_cast<uint32_t>(page);
  std::atomic<uint32_t>& w = r->Word(p);
  uint32_t word = w.load();
  if (StateOf(word) != kNormal || !w.compare_exchange_strong(word, NextWord(word, kLost))) return env.Undefined();
  if (mprotect(reinterpret_cast<void*>(r->PageAddress(p)), r->huge_size, PROT_NONE) != 0) {
    int e = errno;
    SetPageState(*r, p, kNormal);
    errors::Sys(env, e, "mprotect").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  capi::RecordLost(*r, r->PageAddress(p), r->huge_size, BUS_MCEERR_AO);
  return env.Undefined();
}

// Guest reset: punch the page out of the file and map a fresh huge page in its place.
Napi::Value RestoreHugePage(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Region* r = RegionById(env, info[0]);
  uint64_t page;
  if (!r || !Uint(env, info[1], "page", &page)) return env.Undefined();
  if (page >= r->pages) {
    errors::Code(env, "ERR_OUT_OF_RANGE", "page outside the region").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  uint32_t p = static_cast<uint32_t>(page);
  uint32_t st = StateOf(r->Word(p).load());
  Napi::Object o = Napi::Object::New(env);
  if (st != kSplit && st != kLost) {
    o.Set("restored", false);
    o.Set("skipped", true);
    return o;
  }
  uintptr_t target = r->PageAddress(p);
  uint64_t file_off = r->file_offset + (static_cast<uint64_t>(p) << r->huge_shift);
  int e = fileio::PunchHole(r->fd, r->dev, r->ino, file_off, r->huge_size);
  if (e != 0) {
    errors::Sys(env, e, "fallocate", "PUNCH_HOLE").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  mapping::Failure mf;
  bool restored = mapping::MapFreshHugePage(r->fd, file_off, r->huge_size, target, &mf);
  bool anon = false;
  mapping::Failure af;
  if (!restored) anon = mapping::MapFreshAnonymous(target, r->huge_size, &af);
  if (restored || anon) {
    for (uint32_t i = 0; i < r->lost_words_per_page; i++)
      r->lost_bits[static_cast<size_t>(p) * r->lost_words_per_page + i].store(0);
    SetPageState(*r, p, restored ? kNormal : kSplit);
  }
  o.Set("restored", restored);
  o.Set("skipped", false);
  if (!restored) {
    o.Set("errno", mf.err);
    o.Set("syscall", mf.syscall ? mf.syscall : "mmap");
    o.Set("stillSplit", anon);
  }
  return o;
}

// --- introspection -------------------------------------------------------------------------------

Napi::Value PageStates(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Region* r = RegionById(env, info[0]);
  if (!r) return env.Undefined();
  Napi::Uint8Array arr = Napi::Uint8Array::New(env, r->pages);
  for (uint32_t i = 0; i < r->pages; i++) arr[i] = static_cast<uint8_t>(StateOf(r->Word(i).load()));
  return arr;
}

Napi::Value LostSubpages(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Region* r = RegionById(env, info[0]);
  if (!r) return env.Undefined();
  Napi::Array arr = Napi::Array::New(env);
  uint32_t n = 0;
  size_t words = static_cast<size_t>(r->pages) * r->lost_words_per_page;
  for (size_t w = 0; w < words; w++) {
    uint64_t bits = r->lost_bits[w].load();
    while (bits) {
      int b = __builtin_ctzll(bits);
      bits &= bits - 1;
      arr.Set(n++, static_cast<double>((w * 64 + static_cast<size_t>(b)) * kSubpage));
    }
  }
  return arr;
}

Napi::Value Counters(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  auto& c = GlobalCounters();
  o.Set("captured", static_cast<double>(c.captured.load()));
  o.Set("overflow", static_cast<double>(c.overflow.load()));
  o.Set("stale", static_cast<double>(c.stale.load()));
  o.Set("processed", static_cast<double>(c.processed.load()));
  o.Set("posted", static_cast<double>(c.posted.load()));
  o.Set("delivered", static_cast<double>(c.delivered.load()));
  o.Set("paused", g_paused.load() != 0);
  o.Set("reserveBytes", static_cast<double>(mapping::ReserveBytes()));
  o.Set("reserveTarget", static_cast<double>(mapping::ReserveTarget()));
  return o;
}

Napi::Value Pause(const Napi::CallbackInfo& info) {
  g_paused.store(info[0].ToBoolean().Value() ? 1 : 0);
  WakeWorker();
  return info.Env().Undefined();
}

Napi::Value SetReserve(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint64_t bytes;
  if (!Uint(env, info[0], "bytes", &bytes)) return env.Undefined();
  mapping::SetReserveTarget(bytes);
  if (info.Length() > 1 && info[1].ToBoolean().Value()) mapping::RefillReserve();  // now, on this thread
  else WakeWorker();
  return env.Undefined();
}

Napi::Value UseGuardMarkers(const Napi::CallbackInfo& info) {
  mapping::UseGuardMarkers(info[0].ToBoolean().Value());
  return info.Env().Undefined();
}

Napi::Value SetReadThreads(const Napi::CallbackInfo& info) {
  uint64_t n;
  if (Uint(info.Env(), info[0], "threads", &n)) recovery::SetReadThreads(static_cast<int>(n > 16 ? 16 : n));
  return info.Env().Undefined();
}

Napi::Value HugeMappedShare(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Region* r = RegionById(env, info[0]);
  uint64_t page;
  if (!r || !Uint(env, info[1], "page", &page)) return env.Undefined();
  return Napi::Number::New(env, mapping::HugeMappedShare(r->PageAddress(static_cast<uint32_t>(page)), r->huge_size));
}

// --- vCPU load -----------------------------------------------------------------------------------

Napi::Value StartVcpu(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Region* r = RegionById(env, info[0]);
  uint64_t threads, seed, win_off, win_len;
  if (!r || !Uint(env, info[1], "threads", &threads) || !Uint(env, info[2], "seed", &seed) ||
      !Uint(env, info[4], "windowOffset", &win_off) || !Uint(env, info[5], "windowLength", &win_len))
    return env.Undefined();
  if (threads < 1 || threads > 64 || !InRange(env, *r, win_off, win_len)) {
    if (!env.IsExceptionPending())
      errors::Code(env, "ERR_OUT_OF_RANGE", "threads must be 1..64").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  if (FreeSlots() < static_cast<int>(threads) + kSlotHeadroom) return NoSlot(env);
  vcpu::Options o;
  o.region = r;
  o.threads = static_cast<int>(threads);
  o.seed = seed;
  o.write_ratio = info[3].As<Napi::Number>().DoubleValue();
  o.window_offset = win_off & ~(kSubpage - 1);
  o.window_len = win_len & ~(kSubpage - 1);
  int handle = vcpu::Start(o);
  if (handle < 0) return NoSlot(env);
  return Napi::Number::New(env, handle);
}

Napi::Value StopVcpu(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  vcpu::Report rep;
  if (!info[0].IsNumber() || !vcpu::Stop(info[0].As<Napi::Number>().Int32Value(), &rep)) {
    errors::Code(env, "ERR_INVALID_ARG", "no such vCPU load").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  Napi::Object o = Napi::Object::New(env);
  o.Set("accesses", static_cast<double>(rep.accesses));
  o.Set("wrongBytes", static_cast<double>(rep.wrong_bytes));
  o.Set("firstWrongOffset", static_cast<double>(rep.first_wrong));
  Napi::Array stalls = Napi::Array::New(env);
  uint32_t n = 0;
  for (size_t t = 0; t < rep.stalls.size(); t++) {
    for (const StallRecord& s : rep.stalls[t]) {
      Napi::Object so = Napi::Object::New(env);
      so.Set("thread", static_cast<double>(t));
      so.Set("hostAddress", Napi::BigInt::New(env, static_cast<uint64_t>(s.addr)));
      so.Set("stallNs", Napi::BigInt::New(env, s.ns));
      stalls.Set(n++, so);
    }
  }
  o.Set("stalls", stalls);
  Napi::Array mces = Napi::Array::New(env, rep.mces.size());
  for (size_t i = 0; i < rep.mces.size(); i++) {
    Napi::Object mo = Napi::Object::New(env);
    mo.Set("thread", rep.mces[i].thread);
    mo.Set("hostAddress", Napi::BigInt::New(env, static_cast<uint64_t>(rep.mces[i].addr)));
    mces.Set(static_cast<uint32_t>(i), mo);
  }
  o.Set("mceReports", mces);
  o.Set("slotFailures", rep.slot_failures);
  return o;
}

}  // namespace

void Register(Napi::Env env, Napi::Object exports) {
  exports.Set("init", Napi::Function::New(env, Init));
  exports.Set("shutdown", Napi::Function::New(env, Shutdown));
  exports.Set("mapRegion", Napi::Function::New(env, MapRegion));
  exports.Set("unmapRegion", Napi::Function::New(env, UnmapRegion));
  exports.Set("read", Napi::Function::New(env, Read));
  exports.Set("write", Napi::Function::New(env, Write));
  exports.Set("fillPattern", Napi::Function::New(env, FillPattern));
  exports.Set("verifyPattern", Napi::Function::New(env, VerifyPattern));
  exports.Set("hwpoisonProbe", Napi::Function::New(env, HwpoisonProbe));
  exports.Set("injectMadvise", Napi::Function::New(env, InjectMadvise));
  exports.Set("injectSimulated", Napi::Function::New(env, InjectSimulated));
  exports.Set("recoverNow", Napi::Function::New(env, RecoverNow));
  exports.Set("markLost", Napi::Function::New(env, MarkLost));
  exports.Set("restoreHugePage", Napi::Function::New(env, RestoreHugePage));
  exports.Set("pageStates", Napi::Function::New(env, PageStates));
  exports.Set("lostSubpages", Napi::Function::New(env, LostSubpages));
  exports.Set("counters", Napi::Function::New(env, Counters));
  exports.Set("pause", Napi::Function::New(env, Pause));
  exports.Set("setReserve", Napi::Function::New(env, SetReserve));
  exports.Set("useGuardMarkers", Napi::Function::New(env, UseGuardMarkers));
  exports.Set("setReadThreads", Napi::Function::New(env, SetReadThreads));
  exports.Set("hugeMappedShare", Napi::Function::New(env, HugeMappedShare));
  exports.Set("startVcpuLoad", Napi::Function::New(env, StartVcpu));
  exports.Set("stopVcpuLoad", Napi::Function::New(env, StopVcpu));
}

}  // namespace ras::engine
