#include "lanes/lanes.h"

#include <poll.h>
#include <signal.h>
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

#include "capi/capi.h"
#include "lanes/dropped.h"
#include "lanes/process.h"
#include "split/lazy.h"
#include "split/mapping.h"
#include "split/recovery.h"
#include "state/state.h"
#include "tojs/events.h"

namespace ras::lanes {

using tojs::Event;

namespace {

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

}  // namespace

void QueueSlow(const Report& rep, uint32_t page) {
  {
    std::lock_guard<std::mutex> lock(g_state->mu);
    g_state->slow_jobs.push_back({rep, page});
  }
  g_state->cv.notify_all();
}

recovery::Readers* FastReaders() { return &g_state->fast_readers; }

namespace {

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
      // No timeout: every producer notifies (a queued job, stop); idle, the thread sleeps.
      s->cv.wait(lock, [&] { return s->stop.load() || !s->slow_jobs.empty() || lazy::Pending(true); });
      if (s->stop.load()) break;
      if (s->slow_jobs.empty()) {
        lock.unlock();
        lazy::CompleteOne(true);  // a big page's back half, when no big page waits for its front half
        continue;
      }
      job = s->slow_jobs.front();
      s->slow_jobs.pop_front();
    }
    bool deferred = false;  // the lazy path counts it when its fill is done
    {
      RegionRef use = RegionRef::AtSlot(job.rep.region_slot, job.rep.region_id);
      if (use && Recover(*use, job.page, job.rep, &s->slow_readers, batch)) deferred = true;
    }
    tojs::Post(batch);
    if (!deferred) GlobalCounters().processed.fetch_add(1);
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
    // A full reserve waits for a notify (a block taken, a new depth); one that is not (the last
    // attempt was held back by a lazy fill, or memory ran short) tries again every 50 ms.
    bool full = mapping::ReserveBytes() >= mapping::ReserveTarget();
    {
      std::unique_lock<std::mutex> lock(s->mu);
      auto wanted = [&] { return s->stop.load() || s->refill_wanted; };
      if (full) s->cv.wait(lock, wanted);
      else s->cv.wait_for(lock, std::chrono::milliseconds(50), wanted);
      if (s->stop.load()) return;
      s->refill_wanted = false;
    }
    // One block at a time, and not while a lazy fill runs (it would compete for CPU and mmap_lock).
    while (!g_paused.load() && !s->stop.load() && !lazy::Busy() && mapping::RefillOne()) {
    }
  }
}

void Loop(State* s) {
  RaiseThreadPriority(kFastLaneRt);
  s->fast_readers.Start(kFastLaneRt);
  std::vector<Event> batch;
  while (!s->stop.load()) {
    struct pollfd pfd = {s->efd, POLLIN, 0};
    // No timeout while nothing is pending: reports, resume and stop write the eventfd.
    int ready = poll(&pfd, 1, lazy::Pending(false) ? 0 : -1);
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
      if (batch.size() >= 64 || (!batch.empty() && batch.back().type != tojs::kPoison)) {
        tojs::Post(batch);
        GlobalCounters().processed.fetch_add(done);
        done = 0;
      }
    }
    if (!g_paused.load() && !s->stop.load()) {
      uint64_t found = ScanForDroppedReports(batch, Process);
      worked |= !batch.empty();
      done += found;
    }
    tojs::Post(batch);
    GlobalCounters().processed.fetch_add(done);
    // Every report taken: now the back half of a lazy recovery, if one waits (split/lazy.h).
    worked |= lazy::CompleteOne(false);
    // A wake-up with the reserve short (setReserve gave it a new depth) restocks it too.
    if (worked || (ready > 0 && mapping::ReserveBytes() < mapping::ReserveTarget())) {
      {
        std::lock_guard<std::mutex> lock(s->mu);
        s->refill_wanted = true;
      }
      s->cv.notify_all();
    }
  }
  s->fast_readers.Stop();
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
  SettleForNewEngine();  // what closed engines left queued is nobody's work now
  tojs::Start(env, on_events);
  SetWorkerEventFd(s->efd);
  g_shutdown.store(0);
  g_state = s;
  s->thread = SpawnThread(Loop, s);
  s->slow_thread = SpawnThread(SlowLoop, s);
  s->refill_thread = SpawnThread(RefillLoop, s);
  lazy::Start();
  return true;
}

void Wake() {
  State* s = g_state;
  if (!s) return;
  {
    std::lock_guard<std::mutex> lock(s->mu);
    s->refill_wanted = true;
  }
  s->cv.notify_all();
  WakeWorker();
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
  lazy::Stop();  // finishes the fills in progress and posts their events
  SetWorkerEventFd(-1);
  close(s->efd);
  tojs::Stop();
  mapping::ReleaseReserve();
  g_state = nullptr;
  delete s;
}


}  // namespace ras::lanes
