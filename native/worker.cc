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

void CallJs(Napi::Env env, Napi::Function fn, std::vector<Event>* batch);

void Post(std::vector<Event>& batch) {
  if (batch.empty()) return;
  auto* heap = new std::vector<Event>(std::move(batch));
  batch.clear();
  size_t n = heap->size();
  if (g_state->tsfn.NonBlockingCall(heap, CallJs) == napi_ok) {
    GlobalCounters().posted.fetch_add(n);
  } else {
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
  e.done_ns = MonotonicNs();
  return e;
}

// Returns true when the report was handed to the slow lane (it counts as processed there).
bool Process(const Report& rep, std::vector<Event>& out) {
  Region& r = Regions()[rep.region_slot];
  if (r.live.load() != 1 || r.id != rep.region_id) {
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
  poison.page_state = st;
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
    out.push_back(e);
    return false;
  }
  if (st == kSplit && !(rep.flags & kReportAlreadyLost) && !r.SubpageLost(rep.addr)) {
    // Reported while the page was pending or being recovered: a second poison may have landed
    // after that part was read. The file answers whether this subpage is really gone.
    if (recovery::SubpageUnreadable(r, rep.addr)) {
      mapping::Failure f;
      uintptr_t sub = rep.addr & ~(kSubpage - 1);
      mapping::GuardSubpage(sub, r.hwpoison_guard.load() != 0, &f);
      r.MarkSubpageLost(sub);
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
  RaiseThreadPriority(1);
  s->slow_readers.Start(1);
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
    if (r.live.load() == 1 && r.id == job.rep.region_id) batch.push_back(Recover(r, job.page, job.rep, &s->slow_readers));
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
  RaiseThreadPriority(2);
  s->fast_readers.Start(2);
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
    while (!g_paused.load() && !s->stop.load() && DequeueReport(&rep)) {
      worked = true;
      if (!Process(rep, batch)) GlobalCounters().processed.fetch_add(1);
      // Release JS as soon as a recovery is done; poison-only reports are batched.
      if (batch.size() >= 64 || (!batch.empty() && batch.back().type != kPoison)) Post(batch);
    }
    Post(batch);
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

Napi::Value BigAddr(Napi::Env env, uintptr_t a) { return Napi::BigInt::New(env, static_cast<uint64_t>(a)); }

void CallJs(Napi::Env env, Napi::Function fn, std::vector<Event>* batch) {
  if (env != nullptr && fn != nullptr) {
    Napi::Array arr = Napi::Array::New(env, batch->size());
    for (size_t i = 0; i < batch->size(); i++) {
      const Event& e = (*batch)[i];
      Napi::Object o = Napi::Object::New(env);
      o.Set("type", e.type);
      o.Set("regionId", e.report.region_id);
      o.Set("page", e.page);
      o.Set("address", BigAddr(env, e.report.addr));
      o.Set("code", e.report.code);
      o.Set("lsb", e.report.lsb);
      o.Set("tid", e.report.tid);
      o.Set("timeNs", Napi::BigInt::New(env, e.report.time_ns));
      o.Set("alreadyLost", (e.report.flags & kReportAlreadyLost) != 0);
      o.Set("pageState", e.page_state);
      if (e.type == kRecovered || e.type == kRefused) {
        Napi::Array lost = Napi::Array::New(env, e.outcome.lost.size());
        for (size_t j = 0; j < e.outcome.lost.size(); j++) lost.Set(static_cast<uint32_t>(j), e.outcome.lost[j]);
        o.Set("lostSubpages", lost);
        o.Set("bytes", static_cast<double>(e.outcome.bytes));
        o.Set("reads", e.outcome.reads);
        o.Set("durationNs", Napi::BigInt::New(env, e.outcome.ns));
        o.Set("doneNs", Napi::BigInt::New(env, e.done_ns));
        o.Set("usedReserve", e.outcome.used_reserve);
        o.Set("hwpoisoned", e.outcome.hwpoisoned);
        o.Set("reason", e.reason);
        o.Set("errno", e.outcome.err);
        if (e.outcome.syscall) o.Set("syscall", e.outcome.syscall);
      }
      if (e.type == kSubpageLost) o.Set("lostAddress", BigAddr(env, e.lost_addr));
      arr.Set(static_cast<uint32_t>(i), o);
    }
    fn.Call({arr});
    GlobalCounters().delivered.fetch_add(batch->size());
  }
  delete batch;
}

void CleanupHook(void*) { Stop(); }

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
  napi_add_env_cleanup_hook(env, CleanupHook, nullptr);
  return true;
}

void Stop() {
  State* s = g_state;
  if (!s) return;
  napi_remove_env_cleanup_hook(s->env, CleanupHook, nullptr);
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
  s->tsfn.Release();
  mapping::ReleaseReserve();
  g_state = nullptr;
  delete s;
}

bool Running() { return g_state != nullptr; }

void Register(Napi::Env, Napi::Object) {}

}  // namespace ras::worker
