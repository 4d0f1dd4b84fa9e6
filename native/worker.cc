#include "worker.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

#include "capi.h"
#include "mapping.h"
#include "recovery.h"
#include "registry.h"

#ifndef BUS_MCEERR_AO
#define BUS_MCEERR_AO 5
#endif

namespace ras::worker {

namespace {

enum EventType { kPoison = 1, kRecovered = 2, kRefused = 3, kSubpageLost = 4, kDropped = 5 };

struct Event {
  int type = 0;
  uint32_t region_id = 0;
  uint32_t page = 0;
  Report report{};
  recovery::Outcome outcome;
  uint32_t reason = 0;
  uintptr_t lost_addr = 0;
  uint32_t page_state = 0;  // of the huge page when the worker took the report
  uint64_t done_ns = 0;     // when the huge page was usable again (vCPUs released)
};

// Huge pages this large are recovered on the slow lane, so that reading back 1 GiB never holds
// up a 2 MiB page.
constexpr uint64_t kSlowLaneFrom = 64ull << 20;
constexpr int kSlowLaneNice = -10;
constexpr int kFastLaneRt = 2;  // SCHED_FIFO priority of the fast lane and its reader

struct SlowJob {
  Report rep;
  uint32_t page;
};

struct State {
  std::thread thread;       // the fast lane: drains the handlers' queue, recovers small pages
  std::thread slow_thread;  // the slow lane: big pages
  std::thread refill_thread;  // keeps the reserve stocked, at normal priority
  Napi::ThreadSafeFunction tsfn;
  std::atomic<bool> stop{false};
  int efd = -1;
  napi_env env = nullptr;
  recovery::Readers fast_readers, slow_readers;
  std::mutex mu;
  std::condition_variable cv;
  std::deque<SlowJob> slow_jobs;
  bool refill_wanted = false;
};
State* g_state = nullptr;

struct Batch {
  std::vector<Event> events;
  uint32_t generation;
};
std::atomic<uint32_t> g_generation{1};  // bumped when a worker stops

void CallJs(Napi::Env env, Napi::Function fn, Batch* batch);

void Post(std::vector<Event>& batch) {
  if (batch.empty()) return;
  auto* heap = new Batch{std::move(batch), g_generation.load()};
  batch.clear();
  size_t n = heap->events.size();
  GlobalCounters().posted.fetch_add(n);
  if (g_state->tsfn.NonBlockingCall(heap, CallJs) != napi_ok) {
    GlobalCounters().delivered.fetch_add(n);
    delete heap;
  }
}

// The decision the TypeScript policy armed for this region, carried out: refuse, or split.
Event Recover(Region& r, uint32_t page, const Report& rep, recovery::Readers* readers) {
  Event e;
  e.region_id = r.id;
  e.page = page;
  e.report = rep;
  uint32_t reason = r.refuse_reason.load();
  if (reason != kEligible) {
    SetPageState(r, page, kLost);
    e.type = kRefused;
    e.reason = reason;
  } else {
    e.outcome = recovery::SplitHugePage(r, page, {}, readers);
    SetPageState(r, page, e.outcome.ok ? kSplit : kLost);
    e.type = e.outcome.ok ? kRecovered : kRefused;
    e.reason = e.outcome.ok ? 0u : static_cast<uint32_t>(e.outcome.refuse);
  }
  // Recorded for the C API before anybody is released: a vCPU that asks next finds it.
  if (e.type == kRecovered)
    for (uint32_t s : e.outcome.lost) capi::RecordLost(r, r.PageAddress(page) + s * kSubpage, kSubpage, rep.code);
  else
    capi::RecordLost(r, r.PageAddress(page), r.huge_size, rep.code);
  e.done_ns = MonotonicNs();
  return e;
}

// Holds a region against removal while a lane works on it.
class RegionUse {
 public:
  RegionUse(Region& r, uint32_t id) : r_(r) {
    r_.busy.fetch_add(1, std::memory_order_acq_rel);
    ok_ = r_.live.load(std::memory_order_acquire) == 1 && r_.id == id;
  }
  ~RegionUse() { r_.busy.fetch_sub(1, std::memory_order_acq_rel); }
  bool ok() const { return ok_; }

 private:
  Region& r_;
  bool ok_;
};

// Returns true when the report was handed to the slow lane (it counts as processed there).
bool Process(const Report& rep, std::vector<Event>& out) {
  Region& r = Regions()[rep.region_slot];
  RegionUse use(r, rep.region_id);
  if (!use.ok()) {
    Event e;
    e.type = kDropped;
    e.report = rep;
    out.push_back(e);
    return false;
  }
  uint32_t page = r.PageIndex(rep.addr);
  uint32_t st = StateOf(r.Word(page).load());
  Event poison;
  poison.type = kPoison;
  poison.region_id = r.id;
  poison.page = page;
  poison.report = rep;
  poison.page_state = rep.page_state;  // what the faulting thread met, not what the worker finds later
  out.push_back(poison);

  if (st == kPending) {
    SetPageState(r, page, kRecovering);
    if (r.huge_size >= kSlowLaneFrom && r.refuse_reason.load() == kEligible) {
      {
        std::lock_guard<std::mutex> lock(g_state->mu);
        g_state->slow_jobs.push_back({rep, page});
      }
      g_state->cv.notify_all();
      return true;
    }
    out.push_back(Recover(r, page, rep, &g_state->fast_readers));
    return false;
  }
  if (st == kSplit && (rep.flags & kReportNewSubpageLoss)) {
    Event e;
    e.type = kSubpageLost;
    e.region_id = r.id;
    e.page = page;
    e.report = rep;
    e.lost_addr = rep.addr & ~(kSubpage - 1);
    capi::RecordLost(r, e.lost_addr, kSubpage, rep.code);
    out.push_back(e);
    return false;
  }
  if (st == kSplit && !(rep.flags & kReportAlreadyLost) && !r.SubpageLost(rep.addr)) {
    // Reported while the page was pending or being recovered: a second poison may have landed
    // after that part was read. The file answers whether this subpage is really gone.
    if (recovery::SubpageUnreadable(r, rep.addr)) {
      mapping::Failure f;
      uintptr_t sub = rep.addr & ~(kSubpage - 1);
      r.MarkSubpageLost(sub);  // first: a thread touching it from now on gets an MCE report
      ThreadSlot* self = ClaimSlot(kSlotSelfPoison);
      int used = mapping::GuardSubpage(sub, r.guard.load(), &f);
      if (used != r.guard.load()) r.guard.store(HUGETLB_RAS_GUARD_FAULT);  // weakest in use
      ReleaseSlot(self);
      capi::RecordLost(r, sub, kSubpage, rep.code);
      Event e;
      e.type = kSubpageLost;
      e.region_id = r.id;
      e.page = page;
      e.report = rep;
      e.lost_addr = sub;
      out.push_back(e);
    }
  }
  return false;
}

void SlowLoop(State* s) {
  // Big pages take long to read back: not real-time, so the vCPUs that do not wait for this page
  // keep running and the fast lane preempts it; nice -10 (where permitted) so it still gets most
  // of a contended CPU.
  SetThreadNice(kSlowLaneNice);
  s->slow_readers.Start(kSlowLaneNice);
  std::vector<Event> batch;
  for (;;) {
    SlowJob job;
    {
      std::unique_lock<std::mutex> lock(s->mu);
      s->cv.wait(lock, [&] { return s->stop.load() || !s->slow_jobs.empty(); });
      if (s->stop.load()) break;
      job = s->slow_jobs.front();
      s->slow_jobs.pop_front();
    }
    Region& r = Regions()[job.rep.region_slot];
    {
      RegionUse use(r, job.rep.region_id);
      if (use.ok()) batch.push_back(Recover(r, job.page, job.rep, &s->slow_readers));
    }
    Post(batch);
    GlobalCounters().processed.fetch_add(1);
    {
      std::lock_guard<std::mutex> lock(s->mu);
      s->refill_wanted = true;
    }
    s->cv.notify_all();
  }
  s->slow_readers.Stop();
}

void RefillLoop(State* s) {
  SetThreadNice(5);  // restocking is background work
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(s->mu);
      s->cv.wait_for(lock, std::chrono::milliseconds(50), [&] { return s->stop.load() || s->refill_wanted; });
      if (s->stop.load()) return;
      s->refill_wanted = false;
    }
    if (!g_paused.load()) mapping::RefillReserve();
  }
}

void Loop(State* s) {
  RaiseThreadPriority(kFastLaneRt);
  s->fast_readers.Start(kFastLaneRt);
  std::vector<Event> batch;
  while (!s->stop.load()) {
    struct pollfd pfd = {s->efd, POLLIN, 0};
    int ready = poll(&pfd, 1, 50);
    if (ready > 0) {
      uint64_t v;
      ssize_t ignored = read(s->efd, &v, sizeof v);
      (void)ignored;
    }
    Report rep;
    bool worked = false;
    uint64_t done = 0;  // counted as processed only once their events are posted (whenIdle)
    while (!g_paused.load() && !s->stop.load() && DequeueReport(&rep)) {
      worked = true;
      if (!Process(rep, batch)) done++;
      // Release JS as soon as a recovery is done; poison-only reports are batched.
      if (batch.size() >= 64 || (!batch.empty() && batch.back().type != kPoison)) {
        Post(batch);
        GlobalCounters().processed.fetch_add(done);
        done = 0;
      }
    }
    Post(batch);
    GlobalCounters().processed.fetch_add(done);
    if (worked) {
      {
        std::lock_guard<std::mutex> lock(s->mu);
        s->refill_wanted = true;
      }
      s->cv.notify_all();
    }
  }
  s->fast_readers.Stop();
}

// Raw N-API on purpose: this also runs while the environment is torn down, when calls into JS
// fail; node-addon-api would then try to throw, which is fatal at that point. Here a failure just
// drops the batch.
struct ObjectBuilder {
  napi_env env;
  napi_value obj = nullptr;
  bool ok;
  explicit ObjectBuilder(napi_env e) : env(e), ok(napi_create_object(e, &obj) == napi_ok) {}
  void Put(const char* name, napi_value v, napi_status st) {
    ok = ok && st == napi_ok && napi_set_named_property(env, obj, name, v) == napi_ok;
  }
  void U32(const char* n, uint32_t v) { napi_value x = nullptr; Put(n, x, napi_create_uint32(env, v, &x)); }
  void I32(const char* n, int32_t v) { napi_value x = nullptr; Put(n, x, napi_create_int32(env, v, &x)); }
  void F64(const char* n, double v) { napi_value x = nullptr; Put(n, x, napi_create_double(env, v, &x)); }
  void Bool(const char* n, bool v) { napi_value x = nullptr; Put(n, x, napi_get_boolean(env, v, &x)); }
  void Big(const char* n, uint64_t v) { napi_value x = nullptr; Put(n, x, napi_create_bigint_uint64(env, v, &x)); }
  void Str(const char* n, const char* v) { napi_value x = nullptr; Put(n, x, napi_create_string_utf8(env, v, NAPI_AUTO_LENGTH, &x)); }
};

bool BuildEvent(napi_env env, const Event& e, napi_value* out) {
  ObjectBuilder o(env);
  o.U32("type", static_cast<uint32_t>(e.type));
  o.U32("regionId", e.report.region_id);
  o.U32("page", e.page);
  o.Big("address", static_cast<uint64_t>(e.report.addr));
  o.I32("code", e.report.code);
  o.I32("lsb", e.report.lsb);
  o.I32("tid", e.report.tid);
  o.Big("timeNs", e.report.time_ns);
  o.Bool("alreadyLost", (e.report.flags & kReportAlreadyLost) != 0);
  o.U32("pageState", e.page_state);
  if (e.type == kRecovered || e.type == kRefused) {
    napi_value lost = nullptr;
    bool ok = napi_create_array_with_length(env, e.outcome.lost.size(), &lost) == napi_ok;
    for (size_t j = 0; ok && j < e.outcome.lost.size(); j++) {
      napi_value v = nullptr;
      ok = napi_create_uint32(env, e.outcome.lost[j], &v) == napi_ok &&
           napi_set_element(env, lost, static_cast<uint32_t>(j), v) == napi_ok;
    }
    o.Put("lostSubpages", lost, ok ? napi_ok : napi_generic_failure);
    o.F64("bytes", static_cast<double>(e.outcome.bytes));
    o.U32("reads", e.outcome.reads);
    o.Big("durationNs", e.outcome.ns);
    o.Big("doneNs", e.done_ns);
    o.Bool("usedReserve", e.outcome.used_reserve);
    o.I32("guard", e.outcome.guard);
    o.I32("guardErrno", e.outcome.guard_errno);
    if (e.outcome.guard_syscall) o.Str("guardSyscall", e.outcome.guard_syscall);
    o.U32("reason", e.reason);
    o.I32("errno", e.outcome.err);
    if (e.outcome.syscall) o.Str("syscall", e.outcome.syscall);
  }
  if (e.type == kSubpageLost) o.Big("lostAddress", static_cast<uint64_t>(e.lost_addr));
  *out = o.obj;
  return o.ok;
}

void CallJs(Napi::Env env, Napi::Function fn, Batch* batch) {
  size_t n = batch->events.size();
  // A batch from a worker that has stopped since (engine closed) has nobody left to tell.
  if (env != nullptr && fn != nullptr && batch->generation == g_generation.load()) {
    napi_env e = env;
    napi_value arr = nullptr;
    bool ok = napi_create_array_with_length(e, n, &arr) == napi_ok;
    for (size_t i = 0; ok && i < n; i++) {
      napi_value v = nullptr;
      ok = BuildEvent(e, batch->events[i], &v) && napi_set_element(e, arr, static_cast<uint32_t>(i), v) == napi_ok;
    }
    napi_value global = nullptr, result = nullptr;
    if (ok && napi_get_global(e, &global) == napi_ok) {
      napi_value args[1] = {arr};
      napi_call_function(e, global, static_cast<napi_value>(fn), 1, args, &result);
    }
  }
  GlobalCounters().delivered.fetch_add(n);
  delete batch;
}

}  // namespace

bool Start(Napi::Env env, Napi::Function on_events) {
  if (g_state) return g_state->env == static_cast<napi_env>(env);
  auto* s = new State();
  s->env = env;
  s->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (s->efd < 0) {
    delete s;
    return false;
  }
  s->tsfn = Napi::ThreadSafeFunction::New(env, on_events, "hugetlb-ras-events", 0, 1);
  s->tsfn.Unref(env);  // an idle engine must not keep the process alive
  SetWorkerEventFd(s->efd);
  g_shutdown.store(0);
  g_state = s;
  s->thread = std::thread(Loop, s);
  s->slow_thread = std::thread(SlowLoop, s);
  s->refill_thread = std::thread(RefillLoop, s);
  return true;
}

void Stop() {
  State* s = g_state;
  if (!s) return;
  g_shutdown.store(1);
  {
    std::lock_guard<std::mutex> lock(s->mu);
    s->stop.store(true);
  }
  s->cv.notify_all();
  WakeWorker();
  if (s->thread.joinable()) s->thread.join();
  if (s->slow_thread.joinable()) s->slow_thread.join();
  if (s->refill_thread.joinable()) s->refill_thread.join();
  SetWorkerEventFd(-1);
  close(s->efd);
  g_generation.fetch_add(1);
  s->tsfn.Release();
  mapping::ReleaseReserve();
  g_state = nullptr;
  delete s;
}


}  // namespace ras::worker
