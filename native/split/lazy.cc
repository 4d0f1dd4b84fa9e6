#include "split/lazy.h"

#include <errno.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <thread>
#include <vector>

#include "linux_compat.h"
#include "split/lazy_job.h"
#include "split/lazy_uffd.h"
#include "split/props.h"
#include "tojs/events.h"

namespace ras::lazy {

namespace {
constexpr int kFaultRt = 2;  // the fault thread serves waiting vCPUs: real-time where permitted
// The back half's priority: a 2 MiB page's level with the vCPUs (~0.3 ms of copying: a vCPU it
// preempted must not wait for all of it); a 1 GiB page's (~0.1 s) somewhat above, so that the page
// is whole again in about a copy's time on a busy host while the vCPUs keep most of the other CPU.
constexpr int kSmallBackHalfNice = 0;
constexpr int kBigBackHalfNice = -5;

struct State {
  std::thread fault_thread;
  std::atomic<bool> stop{false};
  int efd = -1;
  std::mutex mu;
  std::condition_variable cv;
  std::vector<std::shared_ptr<Job>> jobs;
};
State* g_state = nullptr;
std::atomic<bool> g_enabled{true};
std::atomic<uint64_t> g_lazy{0}, g_eager{0};
std::atomic<bool> g_hold{false};  // tests: HoldBackHalves
// The back half this lane is in the middle of (CompleteOne returned to take reports first).
thread_local std::shared_ptr<Job> t_back;
constexpr uint64_t kReadStep = 256ull << 10;

// The fault thread's faults to serve, in arrival order.
thread_local std::deque<uintptr_t>* t_faults = nullptr;

// Reads every pending message: a REMAP event read lets its mremap finish (until then every fill
// ioctl fails EAGAIN, so the fault thread calls this from there too); faults are queued.
void DrainEvents() {
  int fd = lazyfd::Fd();
  for (;;) {
    struct uffd_msg msgs[16];
    ssize_t n = read(fd, msgs, sizeof msgs);
    if (n <= 0) return;
    for (ssize_t i = 0; i < n / static_cast<ssize_t>(sizeof msgs[0]); i++)
      if (msgs[i].event == UFFD_EVENT_PAGEFAULT) t_faults->push_back(static_cast<uintptr_t>(msgs[i].arg.pagefault.address));
  }
}

void FaultLoop(State* s) {
  RaiseThreadPriority(kFaultRt);
  std::deque<uintptr_t> faults;
  t_faults = &faults;
  lazyfd::SetEagainHook(DrainEvents);
  int fd = lazyfd::Fd();
  while (!s->stop.load()) {
    struct pollfd pfd[2] = {{fd, POLLIN, 0}, {s->efd, POLLIN, 0}};
    if (poll(pfd, 2, -1) <= 0) continue;  // faults and stop (the eventfd) wake it; nothing else
    if (pfd[1].revents) {
      uint64_t v;
      ssize_t ignored = read(s->efd, &v, sizeof v);
      (void)ignored;
    }
    DrainEvents();
    while (!faults.empty()) {
      uintptr_t a = faults.front();
      faults.pop_front();
      std::shared_ptr<Job> j = FindJob(a);
      if (!j) {
        lazyfd::Wake(a & ~(kSubpage - 1), kSubpage);
        continue;
      }
      ServeFault(*j, a);
    }
  }
}

void Finalize(Job& j) {
  std::vector<uint32_t> lost;
  {
    std::lock_guard<std::mutex> lock(j.mu);
    lost = j.lost;
  }
  std::sort(lost.begin(), lost.end());
  lost.erase(std::unique(lost.begin(), lost.end()), lost.end());  // found twice (a toucher and the back half)
  std::vector<tojs::Event> batch(1);
  tojs::Event& ev = batch[0];
  ev.type = tojs::kRecovered;
  ev.region_id = j.region_id;
  ev.page = j.page;
  ev.report = j.rep;
  ev.outcome.ok = true;
  ev.outcome.path = recovery::kPathLazy;
  ev.outcome.bytes = j.size - lost.size() * kSubpage;  // a subpage lost after it went in counts lost
  ev.outcome.reads = j.reads;
  ev.outcome.used_reserve = j.used_reserve;
  ev.outcome.guard = lost.empty() ? HUGETLB_RAS_GUARD_NONE : HUGETLB_RAS_GUARD_UFFD;
  if (int fe = j.err.load()) {
    ev.outcome.guard_errno = fe;
    ev.outcome.guard_syscall = j.err_syscall;
  }
  ev.outcome.lost = lost;
  ev.outcome.ns = j.in_place_ns;
  ev.done_ns = j.released_ns;
  ev.filled_ns = j.filled_ns;
  ev.block_fault_ns = j.block_fault_ns;
  tojs::Post(batch);
  GlobalCounters().processed.fetch_add(1);
  j.ref.reset();
}

std::shared_ptr<Job> Claim(State* s, int which) {  // which: 0 small, 1 big, -1 any
  std::lock_guard<std::mutex> lock(s->mu);
  for (auto& j : s->jobs) {
    if (which >= 0 && (j->size > kChunk) != (which == 1)) continue;
    bool no = false;
    if (j->claimed.compare_exchange_strong(no, true)) return j;
  }
  return nullptr;
}

void Run(const std::shared_ptr<Job>& job) {
  Finalize(*job);
  RemoveJob(job);
}
}  // namespace

// The registry of recoveries in progress (split/lazy_job.h), for the front half and the fault thread.
bool Accepting() { return g_state && g_enabled.load(); }

void AddJob(const std::shared_ptr<Job>& j) {
  std::lock_guard<std::mutex> lock(g_state->mu);
  g_state->jobs.push_back(j);
}

void RemoveJob(const std::shared_ptr<Job>& j) {
  {
    std::lock_guard<std::mutex> lock(g_state->mu);
    g_state->jobs.erase(std::find(g_state->jobs.begin(), g_state->jobs.end(), j));
  }
  g_state->cv.notify_all();
}

std::shared_ptr<Job> FindJob(uintptr_t addr) {
  if (!g_state) return nullptr;
  std::lock_guard<std::mutex> lock(g_state->mu);
  for (auto& j : g_state->jobs)
    if (addr >= j->dst && addr < j->dst + j->size) return j;
  return nullptr;
}

void WaitGone(const std::shared_ptr<Job>& j) {
  std::unique_lock<std::mutex> lock(g_state->mu);
  g_state->cv.wait(lock, [&] { return std::find(g_state->jobs.begin(), g_state->jobs.end(), j) == g_state->jobs.end(); });
}

void CountLazy() { g_lazy.fetch_add(1); }

void Start() {
  props::Start();
  if (g_state) return;
  if (!lazyfd::Open().ok) return;
  auto* s = new State();
  s->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  g_state = s;
  s->fault_thread = SpawnThread(FaultLoop, s);
}

void Stop() {
  State* s = g_state;
  if (!s) return props::Stop();
  // The lanes are stopped: what is left is finished here (an unfilled registered range would read
  // zeros once the userfaultfd is closed), while the fault thread still serves the touchers.
  // A job a lane had begun is claimed already: take every job left, claimed or not.
  for (;;) {
    std::shared_ptr<Job> j;
    {
      std::lock_guard<std::mutex> lock(s->mu);
      if (s->jobs.empty()) break;
      j = s->jobs.front();
    }
    ReadBlock(*j, UINT64_MAX);
    Close(*j);
    Run(j);
  }
  s->stop.store(true);
  uint64_t one = 1;
  ssize_t ignored = write(s->efd, &one, sizeof one);
  (void)ignored;
  s->fault_thread.join();
  props::Stop();
  close(s->efd);
  g_state = nullptr;
  delete s;
}

void SetEnabled(bool on) { g_enabled.store(on); }
bool Enabled() { return g_enabled.load(); }

const char* Unavailable(int* err, const char** syscall) {
  lazyfd::Info i = lazyfd::Open();
  *err = i.err;
  *syscall = i.syscall;
  return i.ok ? nullptr : i.why;
}

void HoldBackHalves(bool on) { g_hold.store(on); }

bool CompleteOne(bool big) {
  State* s = g_state;
  if (!s || g_hold.load()) return false;
  if (!t_back) t_back = Claim(s, big ? 1 : 0);
  if (!t_back) return false;
  std::shared_ptr<Job> j = t_back;
  // The read at normal priority: nobody waits for it (the fault thread serves the touchers of
  // missing pieces in real time meanwhile), and a real-time lane copying the page would keep a
  // vCPU it preempted off its CPU. In steps, so that a new report (the fast lane) is taken first.
  // The close at the lane's own priority: every toucher waits for it.
  Sched saved = CurrentSched();
  SetSched(Sched{SCHED_OTHER, 0, big ? kBigBackHalfNice : kSmallBackHalfNice});
  if (j->read_off == 0) sched_yield();  // a vCPU this lane preempted while it was real-time runs first
  bool read = false;
  // A big page's read in one go (2 MiB reads): its lane has no small pages to serve.
  while (!(read = ReadBlock(*j, big ? UINT64_MAX : kReadStep)) && !ReportsWaiting()) {
  }
  SetSched(saved);
  if (!read) return true;  // back after the reports
  Close(*j);  // sets filled_ns
  Run(j);
  t_back.reset();
  return true;
}

bool Pending(bool big) {
  State* s = g_state;
  if (!s || g_hold.load()) return false;
  if (t_back) return true;
  std::lock_guard<std::mutex> lock(s->mu);
  return std::any_of(s->jobs.begin(), s->jobs.end(), [big](const std::shared_ptr<Job>& j) { return (j->size > kChunk) == big && !j->claimed.load(); });
}

void InFlight(std::vector<std::pair<uint32_t, uint32_t>>* out) {
  if (!g_state) return;
  std::lock_guard<std::mutex> lock(g_state->mu);
  for (auto& j : g_state->jobs) out->emplace_back(j->region_id, j->page);
}

bool Busy() {
  if (!g_state) return false;
  std::lock_guard<std::mutex> lock(g_state->mu);
  return !g_state->jobs.empty();
}

void WaitRegion(const Region& r) {
  if (!g_state) return;
  std::unique_lock<std::mutex> lock(g_state->mu);
  g_state->cv.wait(lock, [&] {
    return std::none_of(g_state->jobs.begin(), g_state->jobs.end(), [&](const std::shared_ptr<Job>& j) { return j->r == &r; });
  });
}

Counters GetCounters() {
  Counters c;
  c.lazy = g_lazy.load();
  c.eager = g_eager.load();
  c.fault_fills = g_fault_fills.load();
  c.taken_back = g_taken_back.load();
  c.collapsed = g_collapsed.load();
  c.in_place_finishes = g_in_place_finishes.load();
  return c;
}

void CountEager() { g_eager.fetch_add(1); }

}  // namespace ras::lazy
