#include "split/recovery.h"

#include <errno.h>
#include <sys/mman.h>

#include <algorithm>
#include <cstring>
#include <thread>

#include "linux_compat.h"
#include "split/fileio.h"
#include "split/mapping.h"
#include "split/numa.h"
#include "split/props.h"
#include "split/uffd.h"

namespace ras::recovery {

constexpr uint64_t kChunk = 8ull << 20;  // large preads: few syscalls
constexpr int kMaxReaders = 16;
std::atomic<int> g_read_threads{2};

// Persistent helper readers: a huge page is read back by several threads at once (one copy
// stream does not saturate memory). They are started once and woken by a futex, so a 2 MiB
// recovery does not pay for thread creation.
struct ReadJob {
  Region* r = nullptr;
  uint64_t off = 0;
  char* dst = nullptr;
  uint64_t len = 0;
  uint32_t first_subpage = 0;
  fileio::ReadBack result;
};

struct ReaderPool {
  explicit ReaderPool() = default;
  std::vector<std::thread> threads;
  std::atomic<uint32_t> generation{0};
  std::atomic<uint32_t> pending{0};
  std::atomic<int> active{0};
  std::atomic<bool> stop{false};
  ReadJob jobs[kMaxReaders];
};

namespace {

// priority > 0: SCHED_FIFO priority; otherwise a nice value.
void HelperLoop(ReaderPool* pool, int index, int priority) {
  if (priority > 0)
    RaiseThreadPriority(priority);
  else
    SetThreadNice(priority);
  uint32_t seen = 0;
  for (;;) {
    uint32_t g = pool->generation.load(std::memory_order_acquire);
    if (pool->stop.load()) return;
    if (g == seen) {
      FutexWait(&pool->generation, g, -1);  // a job and Stop() both bump generation first: idle, asleep
      continue;
    }
    seen = g;
    if (index >= pool->active.load()) continue;
    ReadJob& j = pool->jobs[index + 1];
    j.result = fileio::ReadAround(j.r->fd, j.r->dev, j.r->ino, j.off, j.dst, j.len, kChunk, j.first_subpage);
    if (pool->pending.fetch_sub(1, std::memory_order_acq_rel) == 1) FutexWakeAll(&pool->pending);
  }
}

fileio::ReadBack ReadPage(Region& r, uint32_t page, char* dst, ReaderPool* readers) {
  uint64_t off = r.file_offset + (static_cast<uint64_t>(page) << r.huge_shift);
  uint64_t len = r.huge_size;
  int parts = readers ? static_cast<int>(readers->threads.size()) + 1 : 1;
  if (parts < 2) return fileio::ReadAround(r.fd, r.dev, r.ino, off, dst, len, kChunk, 0);
  uint64_t part = (len / static_cast<uint64_t>(parts) + kSubpage - 1) & ~(kSubpage - 1);
  ReaderPool& pool = *readers;
  int helpers = 0;
  for (int t = 1; t < parts; t++) {
    uint64_t s = part * static_cast<uint64_t>(t);
    if (s >= len) break;
    ReadJob& j = pool.jobs[t];
    j.r = &r;
    j.off = off + s;
    j.dst = dst + s;
    j.len = std::min(part, len - s);
    j.first_subpage = static_cast<uint32_t>(s / kSubpage);
    j.result = fileio::ReadBack{};
    helpers++;
  }
  pool.active.store(helpers);
  pool.pending.store(static_cast<uint32_t>(helpers), std::memory_order_release);
  pool.generation.fetch_add(1, std::memory_order_acq_rel);
  FutexWakeAll(&pool.generation);
  fileio::ReadBack all = fileio::ReadAround(r.fd, r.dev, r.ino, off, dst, std::min(part, len), kChunk, 0);
  for (;;) {
    uint32_t p = pool.pending.load(std::memory_order_acquire);
    if (p == 0) break;
    FutexWait(&pool.pending, p, 100);
  }
  for (int t = 1; t <= helpers; t++) {
    fileio::ReadBack& p = pool.jobs[t].result;
    all.bytes += p.bytes;
    all.calls += p.calls;
    all.lost.insert(all.lost.end(), p.lost.begin(), p.lost.end());
    if (p.err && !all.err) all.err = p.err;
  }
  return all;
}
// The page's subpages that are not `skip`ped, run by run, on this thread (lost indices page-relative).
fileio::ReadBack ReadSkipping(Region& r, uint32_t page, char* dst, const std::vector<bool>& skip) {
  uint64_t off = r.file_offset + (static_cast<uint64_t>(page) << r.huge_shift);
  uint32_t n = static_cast<uint32_t>(skip.size());
  fileio::ReadBack all;
  for (uint32_t a = 0; a < n && !all.err;) {
    if (skip[a]) {
      a++;
      continue;
    }
    uint32_t b = a;
    while (b < n && !skip[b]) b++;
    uint64_t at = static_cast<uint64_t>(a) * kSubpage;
    fileio::ReadBack p = fileio::ReadAround(r.fd, r.dev, r.ino, off + at, dst + at, static_cast<uint64_t>(b - a) * kSubpage, kChunk, a);
    all.bytes += p.bytes;
    all.calls += p.calls;
    all.lost.insert(all.lost.end(), p.lost.begin(), p.lost.end());
    all.err = p.err;
    a = b;
  }
  return all;
}
}  // namespace

Readers::~Readers() { Stop(); }

void Readers::Start(int priority) {
  if (pool_) return;
  pool_ = new ReaderPool();
  int helpers = std::min(g_read_threads.load(), kMaxReaders) - 1;
  for (int i = 0; i < helpers; i++) pool_->threads.push_back(SpawnThread(HelperLoop, pool_, i, priority));
}

void Readers::Stop() {
  if (!pool_) return;
  pool_->stop.store(true);
  pool_->generation.fetch_add(1);
  FutexWakeAll(&pool_->generation);
  for (std::thread& t : pool_->threads) t.join();
  delete pool_;
  pool_ = nullptr;
}

void SetReadThreads(int n) { g_read_threads.store(std::max(1, std::min(n, kMaxReaders))); }
int ReadThreads() { return g_read_threads.load(); }

Outcome SplitHugePage(Region& r, uint32_t page, const std::vector<uint32_t>& known_lost, Readers* readers,
                      bool never_hwpoison) {
  uint64_t t0 = MonotonicNs();
  Outcome out;
  mapping::Block block;
  mapping::Failure mf;
  if (!mapping::TakeBlock(r.huge_size, &block, &mf)) {
    out.refuse = kNoMemory;
    out.err = mf.err;
    out.syscall = mf.syscall;
    return out;
  }
  out.used_reserve = block.from_reserve;
  uintptr_t target = r.PageAddress(page);
  props::Note(r, false);  // MADV_DONTDUMP and a VMM's own userfaultfd: read off this thread (props.h)
  // Before the read faults it: the huge page's memory policy as it was (MPOL_BIND stays BIND), else its node.
  numa::PlaceLike(block.addr, block.size, numa::PolicyAt(target), numa::HugePageNode(r, page), block.from_reserve);
  uint64_t subpages = r.huge_size / kSubpage;
  // Without a reader pool (a restart's re-split, an import, recoverNow) the subpages known lost are
  // not read at all: on this boot the file's copy of them may be poisoned (an EIO each, the slow
  // path of the read), and their bytes are dropped anyway. A live recovery keeps its readers.
  std::vector<bool> known(subpages, false);
  bool skip = false;
  for (uint32_t s : known_lost)
    if (s < subpages) known[s] = skip = true;  // the binding keeps only subpages of the page
  skip = skip && !(readers && readers->pool_);
  fileio::ReadBack rb = skip ? ReadSkipping(r, page, block.addr, known) : ReadPage(r, page, block.addr, readers ? readers->pool_ : nullptr);
  out.reads = rb.calls;
  // Which subpages the read lost, one flag each: a page with hundreds of known-lost subpages (a
  // restart replaying them) is then merged in linear time, not one search of the list per subpage.
  std::vector<bool> read_lost(subpages, false);
  for (uint32_t s : rb.lost) read_lost[s] = true;
  for (uint32_t s = 0; s < subpages; s++) {
    if (!known[s] || read_lost[s]) continue;  // a subpage named twice is added once
    read_lost[s] = true;
    rb.lost.push_back(s);
    memset(block.addr + static_cast<uint64_t>(s) * kSubpage, 0, kSubpage);
    if (!skip) rb.bytes -= std::min<uint64_t>(rb.bytes, kSubpage);  // skipped: never counted
  }
  std::sort(rb.lost.begin(), rb.lost.end());
  if (rb.err || rb.lost.size() >= subpages) {
    // Nothing (or not all) could be read: no private copy may stand in for this page.
    mapping::DropBlock(block);
    out.refuse = kReadBackFailed;
    out.err = rb.err ? rb.err : EIO;
    out.syscall = "pread";
    return out;
  }
  // Lost subpages become inaccessible before anybody can see them, off to the side: poison
  // markers (userfaultfd) or real MADV_HWPOISON where the region asks for it and the kernel
  // allows it; else SwapIn guards them (guard markers or PROT_NONE), a fault KVM cannot resolve.
  int guard = rb.lost.empty() ? HUGETLB_RAS_GUARD_NONE : HUGETLB_RAS_GUARD_FAULT;
  int wanted = props::ChosenGuard(r);  // not the weakest in use: one fallback is not for good
  if (never_hwpoison && wanted == HUGETLB_RAS_GUARD_HWPOISON) wanted = HUGETLB_RAS_GUARD_FAULT;
  if (!rb.lost.empty() && wanted == HUGETLB_RAS_GUARD_UFFD) {
    guard = HUGETLB_RAS_GUARD_UFFD;
    for (size_t i = 0; i < rb.lost.size(); i++) {
      size_t j = i;
      while (j + 1 < rb.lost.size() && rb.lost[j + 1] == rb.lost[j] + 1) j++;
      int e = uffd::PoisonRange(block.addr + static_cast<uint64_t>(rb.lost[i]) * kSubpage,
                                (rb.lost[j] - rb.lost[i] + 1) * kSubpage, false, &out.guard_syscall);
      if (e) {
        out.guard_errno = e;
        guard = HUGETLB_RAS_GUARD_FAULT;
        break;
      }
      i = j;
    }
  } else if (!rb.lost.empty() && wanted == HUGETLB_RAS_GUARD_HWPOISON) {
    ThreadSlot* slot = ClaimSlot(kSlotSelfPoison);
    guard = HUGETLB_RAS_GUARD_HWPOISON;
    for (uint32_t s : rb.lost) {
      char* sub = block.addr + static_cast<uint64_t>(s) * kSubpage;
      // Poisoning a subpage of a mapped THP needs a THP split the kernel may refuse: make it an
      // ordinary 4 KiB page first (dropping 4 KiB splits the PMD; the write faults a fresh page).
      props::Drop(sub, kSubpage);
      *reinterpret_cast<volatile char*>(sub) = 0;
      if (madvise(sub, kSubpage, MADV_HWPOISON) != 0) {
        out.guard_errno = errno;
        out.guard_syscall = "madvise(MADV_HWPOISON)";
        guard = HUGETLB_RAS_GUARD_FAULT;
        break;
      }
    }
    ReleaseSlot(slot);
  }
  if (guard == HUGETLB_RAS_GUARD_FAULT) r.guard.store(HUGETLB_RAS_GUARD_FAULT);  // weakest in use
  bool in_block = guard == HUGETLB_RAS_GUARD_UFFD || guard == HUGETLB_RAS_GUARD_HWPOISON;
  for (uint32_t s : rb.lost) r.MarkSubpageLost(target + static_cast<uint64_t>(s) * kSubpage);
  bool marked = props::MarkLikeRegion(r, block.addr, block.size);
  if (!mapping::SwapIn(block, target, rb.lost, in_block, props::Wanted(r), &mf)) {
    if (block.addr) mapping::DropBlock(block);
    r.ClearPageLost(page);  // the whole page is reported lost: no subpage bits for it
    out.refuse = mf.err == ENOMEM ? kNoMemory : kReadBackFailed;
    out.err = mf.err;
    out.syscall = mf.syscall;
    return out;
  }
  if (!marked) props::Note(r, true);  // the replacement VMA: marked MADV_DONTDUMP after the fact
  out.ok = true;
  out.bytes = rb.bytes;
  out.lost = std::move(rb.lost);
  out.guard = guard;
  out.ns = MonotonicNs() - t0;
  return out;
}

}  // namespace ras::recovery
