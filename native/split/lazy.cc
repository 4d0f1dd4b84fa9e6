#include "split/lazy.h"

#include <errno.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <thread>
#include <vector>

#include "capi/capi.h"
#include "linux_compat.h"
#include "split/fileio.h"
#include "split/lazy_job.h"
#include "split/lazy_uffd.h"
#include "tojs/events.h"

#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE 25  // Linux >= 6.1
#endif

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
// The lane's front half in progress: Begin put the touched 4 KiB in, AfterRelease does the rest.
thread_local std::shared_ptr<Job> t_front;
thread_local uint64_t t_front_sub = 0;
// The back half this lane is in the middle of (CompleteOne returned to take reports first).
thread_local std::shared_ptr<Job> t_back;
constexpr uint64_t kReadStep = 256ull << 10;

std::shared_ptr<Job> FindJob(uintptr_t addr) {
  std::lock_guard<std::mutex> lock(g_state->mu);
  for (auto& j : g_state->jobs)
    if (addr >= j->dst && addr < j->dst + j->size) return j;
  return nullptr;
}

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
    if (poll(pfd, 2, 100) <= 0) continue;
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

void Run(State* s, const std::shared_ptr<Job>& job) {
  Finalize(*job);
  {
    std::lock_guard<std::mutex> lock(s->mu);
    s->jobs.erase(std::find(s->jobs.begin(), s->jobs.end(), job));
  }
  s->cv.notify_all();
}
}  // namespace

void Start() {
  if (g_state) return;
  if (!lazyfd::Open().ok) return;
  auto* s = new State();
  s->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  g_state = s;
  s->fault_thread = SpawnThread(FaultLoop, s);
}

void Stop() {
  State* s = g_state;
  if (!s) return;
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
    Run(s, j);
  }
  s->stop.store(true);
  uint64_t one = 1;
  ssize_t ignored = write(s->efd, &one, sizeof one);
  (void)ignored;
  s->fault_thread.join();
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

bool Begin(Region& r, uint32_t page, const Report& rep, uint64_t t0, recovery::Outcome* out) {
  if (!g_enabled.load() || !g_state || r.guard.load() != HUGETLB_RAS_GUARD_UFFD || r.huge_size < kChunk) return false;
  // Nobody stalls on an action-optional report: the eager path puts the whole page in sooner.
  if (rep.code != BUS_MCEERR_AR) return false;
  uintptr_t target = r.PageAddress(page);
  if (rep.addr < target || rep.addr >= target + r.huge_size) return false;
  // All of the page must be in the file (it may have shrunk): else the eager path refuses it whole.
  struct stat sb;
  uint64_t page_end = r.file_offset + (static_cast<uint64_t>(page + 1) << r.huge_shift);
  if (fstat(r.fd, &sb) != 0 || static_cast<uint64_t>(sb.st_size) < page_end) return false;
  RegionRef hold = RegionRef::AtSlot(rep.region_slot, rep.region_id);
  if (!hold) return false;
  auto j = std::make_shared<Job>();
  mapping::Failure mf;
  if (!mapping::TakeBlock(r.huge_size, &j->block, &mf)) return false;
  j->r = &r;
  j->ref.emplace(std::move(hold));  // the job holds the region against removal until it is done
  j->region_id = r.id;
  j->page = page;
  j->rep = rep;
  j->dst = target;
  j->size = r.huge_size;
  j->file_off = r.file_offset + (static_cast<uint64_t>(page) << r.huge_shift);
  j->pieces = static_cast<uint32_t>(j->size / kPiece);
  j->piece.reset(new std::atomic<uint8_t>[j->pieces]);
  for (uint32_t p = 0; p < j->pieces; p++) j->piece[p].store(kMissing);
  j->used_reserve = j->block.from_reserve;
  j->t0 = t0;
  uint32_t touched = static_cast<uint32_t>((rep.addr - target) / kPiece);
  j->piece[touched].store(kFilling);  // this thread's, below
  {
    std::lock_guard<std::mutex> lock(g_state->mu);
    g_state->jobs.push_back(j);  // before any fault can reach the fault thread
  }
  auto undo = [&]() {
    {
      std::lock_guard<std::mutex> lock(g_state->mu);
      g_state->jobs.erase(std::find(g_state->jobs.begin(), g_state->jobs.end(), j));
    }
    mapping::DropBlock(j->block);
    j->ref.reset();
    return false;  // the eager path replaces whatever is at target now; its touchers wait meanwhile
  };
  // The empty replacement is registered off to the side, then one mremap puts it in the huge page's
  // place, registration included (EVENT_REMAP: the mremap returns once the fault thread has read
  // the event). No moment where the range is unregistered or inaccessible: a thread, or KVM for a
  // vCPU, touching it from now on waits in the kernel until its piece is in (a PROT_NONE moment
  // would fail KVM_RUN with EFAULT).
  void* m = mmap(nullptr, j->size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (m == MAP_FAILED) return undo();
  madvise(m, j->size, MADV_DONTFORK);  // a VMM that forks must not copy guest RAM
  if (lazyfd::Register(reinterpret_cast<uintptr_t>(m), j->size)) {
    munmap(m, j->size);
    return undo();
  }
  if (mremap(m, j->size, j->size, MREMAP_MAYMOVE | MREMAP_FIXED, reinterpret_cast<void*>(target)) == MAP_FAILED) {
    lazyfd::Unregister(reinterpret_cast<uintptr_t>(m), j->size);
    munmap(m, j->size);
    return undo();
  }
  // The 4 KiB the stalled thread touched goes in before it is released (if lost: its marker, and
  // it is recorded for the C API): it runs again without a second wait. The rest of its piece
  // follows right after the release (AfterRelease).
  uint64_t sub = (rep.addr - target) & ~(kSubpage - 1);
  InstallSubpage(*j, sub);
  t_front = j;
  t_front_sub = sub;
  uint64_t now = MonotonicNs();
  j->in_place_ns = now - t0;
  j->released_ns = now;
  out->ok = true;
  out->path = recovery::kPathLazy;
  out->used_reserve = j->used_reserve;
  {
    std::lock_guard<std::mutex> lock(j->mu);
    out->lost = j->lost;
  }
  out->guard = out->lost.empty() ? HUGETLB_RAS_GUARD_NONE : HUGETLB_RAS_GUARD_UFFD;
  out->ns = j->in_place_ns;
  g_lazy.fetch_add(1);
  return true;
}

void AfterRelease() {
  if (!t_front) return;
  InstallRestOfPiece(*t_front, t_front_sub);
  t_front.reset();
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
  Run(s, j);
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

bool PoisonInFill(Region& r, uintptr_t sub) {
  if (!g_state) return false;
  std::shared_ptr<Job> j = FindJob(sub);
  if (!j || j->r != &r) return false;
  {
    std::lock_guard<std::mutex> lock(j->mu);
    if (!j->sealed) {
      int e = lazyfd::Poison(sub, kSubpage);
      if (e == EEXIST) {
        // In place already: drop it, then the marker. A toucher in between waits in the kernel.
        madvise(reinterpret_cast<void*>(sub), kSubpage, MADV_DONTNEED);
        e = lazyfd::Poison(sub, kSubpage);
      }
      if (e && e != EEXIST) return false;
      j->lost.push_back(static_cast<uint32_t>((sub - j->dst) / kSubpage));
      return true;
    }
  }
  // The block's markers are fixed and it is about to replace the range: guard it there, after.
  std::unique_lock<std::mutex> lock(g_state->mu);
  g_state->cv.wait(lock, [&] { return std::find(g_state->jobs.begin(), g_state->jobs.end(), j) == g_state->jobs.end(); });
  return false;
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
