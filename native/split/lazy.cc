#include "split/lazy.h"

#include <errno.h>
#include <linux/userfaultfd.h>
#include <poll.h>
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
constexpr int kFillers = 2;
constexpr int kFaultRt = 2;      // the fault thread serves stalled vCPUs: real-time where permitted
constexpr int kFillerNice = 0;  // the fillers: background, level with the vCPUs (-10 starved a released vCPU for ms)

struct State {
  std::thread fault_thread;
  std::vector<std::thread> fillers;
  std::atomic<bool> stop{false};
  int efd = -1;
  std::mutex mu;
  std::condition_variable cv;
  std::vector<std::shared_ptr<Job>> jobs;
};
State* g_state = nullptr;
std::atomic<bool> g_enabled{true};
std::atomic<uint64_t> g_lazy{0}, g_eager{0};

std::shared_ptr<Job> FindJob(uintptr_t addr) {
  std::lock_guard<std::mutex> lock(g_state->mu);
  for (auto& j : g_state->jobs)
    if (addr >= j->dst && addr < j->dst + j->size) return j;
  return nullptr;
}

void Notify() {
  { std::lock_guard<std::mutex> lock(g_state->mu); }
  g_state->cv.notify_all();
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
      if (j->done.load() == j->pieces) Notify();
    }
  }
}

void Finalize(Job& j) {
  j.filled_ns = MonotonicNs();
  // Everything is in: no registered 4 KiB is left unpopulated (KVM would fail it with EFAULT once
  // a balloon drops it). The markers stay.
  int e = lazyfd::Unregister(j.dst, j.size);
  std::vector<uint32_t> lost;
  {
    std::lock_guard<std::mutex> lock(j.mu);
    lost = j.lost;
  }
  std::sort(lost.begin(), lost.end());
  lost.erase(std::unique(lost.begin(), lost.end()), lost.end());  // found by the fill and reported too
  // Chunks that touches filled piece by piece are 4 KiB pages: put the healthy ones back on 2 MiB.
  for (uint32_t c = 0; c < j.chunks && j.size > kChunk; c++) {
    if (j.chunk[c].load() != kPiecewise) continue;
    uint32_t lo = static_cast<uint32_t>(c * (kChunk / kSubpage)), hi = lo + static_cast<uint32_t>(kChunk / kSubpage);
    if (std::any_of(lost.begin(), lost.end(), [&](uint32_t s) { return s >= lo && s < hi; })) continue;
    if (madvise(reinterpret_cast<void*>(j.dst + c * kChunk), kChunk, MADV_COLLAPSE) == 0)
      g_collapsed.fetch_add(1, std::memory_order_relaxed);
  }
  mapping::DropBlock(j.staging);  // what is left there: the lost subpages' stale copies
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
  int fe = j.err.load();
  if (fe || e) {
    ev.outcome.guard_errno = fe ? fe : e;
    ev.outcome.guard_syscall = fe ? j.err_syscall : "ioctl(UFFDIO_UNREGISTER)";
  }
  ev.outcome.lost = lost;
  ev.outcome.ns = j.in_place_ns;
  ev.done_ns = j.released_ns;
  ev.filled_ns = j.filled_ns;
  tojs::Post(batch);
  GlobalCounters().processed.fetch_add(1);
  j.ref.reset();
}

void FillerLoop(State* s) {
  SetThreadNice(kFillerNice);
  for (;;) {
    std::vector<std::shared_ptr<Job>> jobs;
    {
      std::unique_lock<std::mutex> lock(s->mu);
      if (s->stop.load() && s->jobs.empty()) return;
      jobs = s->jobs;
    }
    bool worked = false;
    for (auto& j : jobs) {
      if (j->done.load() == j->pieces) {
        {
          std::lock_guard<std::mutex> lock(j->mu);
          if (j->finalizing) continue;
          j->finalizing = true;
        }
        Finalize(*j);
        {
          std::lock_guard<std::mutex> lock(s->mu);
          s->jobs.erase(std::find(s->jobs.begin(), s->jobs.end(), j));
        }
        s->cv.notify_all();
        worked = true;
        break;
      }
      if (FillSome(*j)) {
        worked = true;
        break;
      }
    }
    if (worked) continue;
    std::unique_lock<std::mutex> lock(s->mu);
    s->cv.wait_for(lock, std::chrono::milliseconds(20));
  }
}
}  // namespace

void Start() {
  if (g_state) return;
  if (!lazyfd::Open().ok) return;
  auto* s = new State();
  s->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  g_state = s;
  s->fault_thread = SpawnThread(FaultLoop, s);
  for (int i = 0; i < kFillers; i++) s->fillers.push_back(SpawnThread(FillerLoop, s));
}

void Stop() {
  State* s = g_state;
  if (!s) return;
  {
    std::lock_guard<std::mutex> lock(s->mu);
    s->stop.store(true);  // the fillers finish every job first
  }
  s->cv.notify_all();
  for (std::thread& t : s->fillers) t.join();
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
  // Nobody stalls on an action-optional report: the eager path puts the whole page in sooner (a
  // lazy fill moves a chunk with a lost subpage in 4 KiB page by 4 KiB page).
  if (rep.code != BUS_MCEERR_AR) return false;
  // All of the page must be in the file (it may have shrunk): else the eager path refuses it whole.
  struct stat sb;
  uint64_t page_end = r.file_offset + (static_cast<uint64_t>(page + 1) << r.huge_shift);
  if (fstat(r.fd, &sb) != 0 || static_cast<uint64_t>(sb.st_size) < page_end) return false;
  auto j = std::make_shared<Job>();
  mapping::Failure mf;
  if (!mapping::TakeBlock(r.huge_size, &j->staging, &mf)) return false;
  char* fresh = mapping::MapAligned(r.huge_size, &mf);
  if (!fresh) {
    mapping::DropBlock(j->staging);
    return false;
  }
  uintptr_t dst = reinterpret_cast<uintptr_t>(fresh);
  uintptr_t target = r.PageAddress(page);
  auto undo = [&](bool registered) {
    if (registered) lazyfd::Unregister(dst, r.huge_size);
    munmap(fresh, r.huge_size);
    mapping::DropBlock(j->staging);
    return false;
  };
  if (lazyfd::Register(dst, r.huge_size)) return undo(false);
  j->r = &r;
  j->region_id = r.id;
  j->page = page;
  j->rep = rep;
  j->dst = target;
  j->size = r.huge_size;
  j->file_off = r.file_offset + (static_cast<uint64_t>(page) << r.huge_shift);
  j->chunks = static_cast<uint32_t>(j->size / kChunk);
  j->pieces = static_cast<uint32_t>(j->size / kPiece);
  j->pieces_per_chunk = static_cast<uint32_t>(kChunk / kPiece);
  j->chunk.reset(new std::atomic<uint8_t>[j->chunks]);
  j->piece.reset(new std::atomic<uint8_t>[j->pieces]);
  for (uint32_t c = 0; c < j->chunks; c++) j->chunk[c].store(kUntouched);
  for (uint32_t p = 0; p < j->pieces; p++) j->piece[p].store(kMissing);
  j->used_reserve = j->staging.from_reserve;
  j->t0 = t0;
  // The reported subpage is the likeliest toucher: if the file says it is lost, its marker goes
  // in before the move, so the thread that hit it gets its machine check at once.
  if (rep.addr >= target && rep.addr < target + j->size) {
    uint64_t off = (rep.addr - target) & ~(kSubpage - 1);
    fileio::ReadBack rb = fileio::ReadAround(r.fd, r.dev, r.ino, j->file_off + off, j->staging.addr + off, kSubpage,
                                             kSubpage, static_cast<uint32_t>(off / kSubpage));
    if (rb.err) return undo(true);  // not poison but an unreadable file: the eager path refuses it
    if (!rb.lost.empty()) {
      if (lazyfd::Poison(dst + off, kSubpage)) return undo(true);
      uint32_t s = static_cast<uint32_t>(off / kSubpage);
      r.MarkSubpageLost(target + off);
      j->premarked.push_back(s);
      j->lost.push_back(s);
      j->chunk[off / kChunk].store(kPiecewise);
    }
  }
  RegionRef hold = RegionRef::AtSlot(rep.region_slot, rep.region_id);
  if (!hold) return undo(true);
  j->ref.emplace(std::move(hold));  // the fill holds the region against removal
  {
    std::lock_guard<std::mutex> lock(g_state->mu);
    g_state->jobs.push_back(j);
  }
  // One mremap puts it in place, registration and markers included; it returns once the fault
  // thread has read the REMAP event.
  void* moved = mremap(fresh, j->size, j->size, MREMAP_MAYMOVE | MREMAP_FIXED, reinterpret_cast<void*>(target));
  if (moved == MAP_FAILED) {
    {
      std::lock_guard<std::mutex> lock(g_state->mu);
      g_state->jobs.erase(std::find(g_state->jobs.begin(), g_state->jobs.end(), j));
    }
    j->ref.reset();
    return undo(true);
  }
  for (uint32_t s : j->premarked) capi::RecordLost(r, target + static_cast<uint64_t>(s) * kSubpage, kSubpage, rep.code);
  uint64_t now = MonotonicNs();
  j->in_place_ns = now - t0;
  j->released_ns = now;
  out->ok = true;
  out->path = recovery::kPathLazy;
  out->used_reserve = j->used_reserve;
  out->guard = j->premarked.empty() ? HUGETLB_RAS_GUARD_NONE : HUGETLB_RAS_GUARD_UFFD;
  out->lost = j->premarked;
  out->ns = j->in_place_ns;
  g_lazy.fetch_add(1);
  g_state->cv.notify_all();
  return true;
}

bool PoisonInFill(Region& r, uintptr_t sub) {
  if (!g_state) return false;
  std::shared_ptr<Job> j = FindJob(sub);
  if (!j || j->r != &r) return false;
  int e = lazyfd::Poison(sub, kSubpage);
  if (e == EEXIST) {
    // In place already: drop it, then the marker. A toucher in between faults to the fault thread,
    // which sees the subpage lost and places the marker itself (never a zero page).
    madvise(reinterpret_cast<void*>(sub), kSubpage, MADV_DONTNEED);
    e = lazyfd::Poison(sub, kSubpage);
  }
  if (e && e != EEXIST) return false;
  std::lock_guard<std::mutex> lock(j->mu);
  j->lost.push_back(static_cast<uint32_t>((sub - j->dst) / kSubpage));
  return true;
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
  c.chunk_moves = g_chunk_moves.load();
  c.collapsed = g_collapsed.load();
  c.move_fallbacks = g_move_fallbacks.load();
  return c;
}

void CountEager() { g_eager.fetch_add(1); }

}  // namespace ras::lazy
