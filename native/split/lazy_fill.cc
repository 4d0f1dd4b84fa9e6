// The two halves of a lazy recovery (split/lazy_job.h has the piece states): the front, where a
// toucher's 64 KiB piece is read and copied into the registered range, and the back, where the
// whole page is read into a pre-faulted block off to the side, the pieces touched meanwhile are
// moved back into it, and the block replaces the range in one mremap: the eager path's end state
// (one VMA, 2 MiB THPs, markers on the lost subpages), reached after the vCPUs went on.
#include <errno.h>
#include <sched.h>
#include <sys/mman.h>

#include <algorithm>
#include <cstdlib>

#include "capi/capi.h"
#include "split/fileio.h"
#include "split/lazy_job.h"
#include "split/lazy_uffd.h"
#include "split/mapping.h"
#include "split/numa.h"
#include "split/props.h"

#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE 25  // Linux >= 6.1
#endif

namespace ras::lazy {

std::atomic<uint64_t> g_fault_fills{0}, g_taken_back{0}, g_collapsed{0}, g_in_place_finishes{0};

namespace {
// Each thread that fills pieces (the lanes and the fault thread) reads into its own buffer.
char* PieceBuffer() {
  static thread_local char* buf = nullptr;
  if (!buf) buf = static_cast<char*>(aligned_alloc(kSubpage, kPiece));
  return buf;
}

bool IsLost(const std::vector<uint32_t>& sorted, uint32_t s) { return std::binary_search(sorted.begin(), sorted.end(), s); }

// Calls f(start, end) for each run of subpages of [lo, hi) not in `lost` (sorted), in bytes.
template <typename F>
bool ForHealthyRuns(const std::vector<uint32_t>& lost, uint64_t lo, uint64_t hi, F f) {
  uint64_t run = lo;
  for (uint64_t a = lo; a <= hi; a += kSubpage) {
    if (a < hi && !IsLost(lost, static_cast<uint32_t>(a / kSubpage))) continue;
    if (a > run && !f(run, a)) return false;
    run = a + kSubpage;
  }
  return true;
}

// op(addr, len) on [a, z) at once; where that fails (a range crossing a VMA boundary: something
// changed the protection of one 4 KiB inside, as the kernel does when it takes a page away), page
// by page. A page op still refuses is lost: never a hole that reads as zeros or stale data.
template <typename Op>
void PerPage(Job& j, uint64_t a, uint64_t z, const char* what, Op op) {
  if (op(a, z - a) == 0) return;
  for (uint64_t x = a; x < z; x += kSubpage) {
    int e = op(x, kSubpage);
    if (e == 0) continue;
    Fail(j, e, what);
    MarkLost(j, x);
  }
}

// The page's lost subpages as known now, sorted: the job's and the region's bits (a signal handler
// marks a loss in a split page there).
std::vector<uint32_t> LostNow(Job& j) {
  std::vector<uint32_t> lost;
  {
    std::lock_guard<std::mutex> lock(j.mu);
    lost = j.lost;
  }
  std::vector<uint32_t> bits = j.r->LostSubpagesOf(j.page);
  lost.insert(lost.end(), bits.begin(), bits.end());
  std::sort(lost.begin(), lost.end());
  lost.erase(std::unique(lost.begin(), lost.end()), lost.end());
  return lost;
}

// [off, off+len) of a claimed piece from the file into place at dst: healthy runs copied in (which
// wakes their waiters), lost subpages marked (their marker wakes them with a SIGBUS). Never a hole
// that reads as zeros.
void FillRange(Job& j, uint64_t off, uint64_t len) {
  if (len == 0) return;
  char* buf = PieceBuffer();
  if (!buf) {
    Fail(j, ENOMEM, "aligned_alloc");
    for (uint64_t a = off; a < off + len; a += kSubpage) MarkLost(j, a);
    return;
  }
  fileio::ReadBack rb = fileio::ReadAround(j.r->fd, j.r->dev, j.r->ino, j.file_off + off, buf, len, len,
                                           static_cast<uint32_t>(off / kSubpage));
  if (rb.err) {
    // Not a poisoned subpage but a failed read (the file shrank, an I/O error): what was read
    // cannot be told from what was not, so none of it goes in as data.
    Fail(j, rb.err, "pread");
    rb.lost.clear();
    for (uint64_t a = off; a < off + len; a += kSubpage) rb.lost.push_back(static_cast<uint32_t>(a / kSubpage));
  }
  std::sort(rb.lost.begin(), rb.lost.end());
  // Known lost before (a marker is in): not copied over.
  for (uint64_t a = off; a < off + len; a += kSubpage)
    if (j.r->SubpageLost(j.dst + a) && !IsLost(rb.lost, static_cast<uint32_t>(a / kSubpage)))
      rb.lost.insert(std::upper_bound(rb.lost.begin(), rb.lost.end(), a / kSubpage), static_cast<uint32_t>(a / kSubpage));
  for (uint32_t s : rb.lost) MarkLost(j, static_cast<uint64_t>(s) * kSubpage);
  ForHealthyRuns(rb.lost, off, off + len, [&](uint64_t a, uint64_t b) {
    PerPage(j, a, b, "ioctl(UFFDIO_COPY)", [&](uint64_t x, uint64_t n) {
      return lazyfd::Copy(j.dst + x, reinterpret_cast<uintptr_t>(buf + (x - off)), n);
    });
    return true;
  });
  std::lock_guard<std::mutex> lock(j.mu);
  j.reads += rb.calls;
}

// The block cannot replace the range (a failure after the front half, a page pinned for I/O): finish
// in place instead, as 4 KiB pages. Pieces already moved into the block are copied back from it, the
// others read again (a loss the file shows since is found). The block's memory is given back piece
// by piece as the range fills: a 1 GiB page never needs two copies at once.
void FinishInPlace(Job& j, const std::vector<uint8_t>& in_block, const std::vector<uint32_t>& lost) {
  g_in_place_finishes.fetch_add(1, std::memory_order_relaxed);
  j.in_place_finish = true;
  lazyfd::Unregister(reinterpret_cast<uintptr_t>(j.block.addr), j.size);  // if it was registered
  for (uint32_t p = 0; p < j.pieces; p++) {
    uint8_t st = j.piece[p].load(std::memory_order_acquire);
    uint64_t off = static_cast<uint64_t>(p) * kPiece, end = std::min(off + kPiece, j.size);
    if (st == kClosed) {
      props::Drop(j.block.addr + off, end - off);
      FillRange(j, off, end - off);
    } else if (in_block[p]) {
      ForHealthyRuns(lost, off, end, [&](uint64_t a, uint64_t b) {
        PerPage(j, a, b, "ioctl(UFFDIO_COPY)", [&](uint64_t x, uint64_t n) {
          return lazyfd::Copy(j.dst + x, reinterpret_cast<uintptr_t>(j.block.addr) + x, n);
        });
        return true;
      });
      for (uint32_t s : lost)
        if (s * kSubpage >= off && s * kSubpage < end) MarkLost(j, s * kSubpage);
      props::Drop(j.block.addr + off, end - off);
    }
  }
  lazyfd::Wake(j.dst, j.size);
  j.filled_ns = MonotonicNs();
  int e = lazyfd::Unregister(j.dst, j.size);
  if (e) Fail(j, e, "ioctl(UFFDIO_UNREGISTER)");
  mapping::DropBlock(j.block);
}
}  // namespace

void Fail(Job& j, int e, const char* sc) {
  int zero = 0;
  if (j.err.compare_exchange_strong(zero, e)) j.err_syscall = sc;
}

void MarkLost(Job& j, uint64_t off) {
  // Marked first: a toucher's SIGBUS from the marker is then taken for the MCE it is.
  if (j.r->MarkSubpageLost(j.dst + off)) capi::RecordLost(*j.r, j.dst + off, kSubpage, j.rep.code);
  int e = lazyfd::Poison(j.dst + off, kSubpage);
  if (e && e != EEXIST) Fail(j, e, "ioctl(UFFDIO_POISON)");
  std::lock_guard<std::mutex> lock(j.mu);
  j.lost.push_back(static_cast<uint32_t>(off / kSubpage));
}

void InstallPiece(Job& j, uint32_t p) {
  uint64_t off = static_cast<uint64_t>(p) * kPiece;
  FillRange(j, off, std::min(kPiece, j.size - off));
  j.piece[p].store(kDone, std::memory_order_release);
}

void InstallSubpage(Job& j, uint64_t sub) { FillRange(j, sub, kSubpage); }

void InstallRestOfPiece(Job& j, uint64_t sub) {
  uint32_t p = static_cast<uint32_t>(sub / kPiece);
  uint64_t off = static_cast<uint64_t>(p) * kPiece, end = std::min(off + kPiece, j.size);
  FillRange(j, off, sub - off);
  FillRange(j, sub + kSubpage, end - sub - kSubpage);
  j.piece[p].store(kDone, std::memory_order_release);
}

void ServeFault(Job& j, uintptr_t addr) {
  uint64_t off = (addr - j.dst) & ~(kSubpage - 1);
  uint32_t p = static_cast<uint32_t>(off / kPiece);
  uint8_t ps = kMissing;
  if (j.piece[p].compare_exchange_strong(ps, kFilling)) {
    InstallPiece(j, p);
    g_fault_fills.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  // kFilling: its copy wakes the waiter. kClosed / kTaken: the swap does. kDone: a late message
  // (the waiter was woken), or the page was dropped since (MADV_DONTNEED): then it reads as zeros,
  // as anonymous memory does after a drop; a wake alone would send the thread round for ever.
  if (ps != kDone || !j.piece[p].compare_exchange_strong(ps, kFilling)) return;
  int e = j.r->SubpageLost(j.dst + off) ? lazyfd::Poison(j.dst + off, kSubpage) : lazyfd::ZeroPage(j.dst + off, kSubpage);
  if (e == EEXIST) lazyfd::Wake(j.dst + off, kSubpage);
  j.piece[p].store(kDone, std::memory_order_release);
}

bool ReadBlock(Job& j, uint64_t budget) {
  Region& r = *j.r;
  if (j.read_off == 0) numa::PlaceLike(j.block.addr, j.size, j.pol, numa::HugePageNode(r, j.page), j.block.from_reserve);
  while (j.read_off < j.size && budget > 0 && !j.read_err) {
    uint64_t len = std::min({budget, kChunk, j.size - j.read_off});
    fileio::ReadBack rb = fileio::ReadAround(r.fd, r.dev, r.ino, j.file_off + j.read_off, j.block.addr + j.read_off, len, len,
                                             static_cast<uint32_t>(j.read_off / kSubpage));
    {
      std::lock_guard<std::mutex> lock(j.mu);
      j.reads += rb.calls;
    }
    j.read_err = rb.err;
    if (!rb.err)
      for (uint32_t s : rb.lost) MarkLost(j, static_cast<uint64_t>(s) * kSubpage);
    j.read_off += len;
    budget -= len;
  }
  return j.read_off >= j.size || j.read_err;
}

void Close(Job& j) {
  uintptr_t b = reinterpret_cast<uintptr_t>(j.block.addr);
  // Closing: every piece claimed, so nobody fills, zeroes or drops one from here on.
  std::vector<uint8_t> in_block(j.pieces, 0);
  for (uint32_t p = 0; p < j.pieces; p++) {
    for (;;) {
      uint8_t st = j.piece[p].load(std::memory_order_acquire);
      if (st == kMissing && j.piece[p].compare_exchange_strong(st, kClosed)) break;
      if (st == kDone && j.piece[p].compare_exchange_strong(st, kTaken)) break;
      if (st == kFilling) sched_yield();  // a toucher's piece going in: a few microseconds
    }
  }
  {
    std::lock_guard<std::mutex> lock(j.mu);
    j.sealed = true;  // a loss PoisonInFill would add waits for the end and is guarded after it
  }
  // A PoisonInFill that began before the seal places its marker without the job's lock (its ioctl
  // can wait for the fault thread): it ends, bounded by lazyfd's own deadline, before anything moves.
  for (;;) {
    {
      std::lock_guard<std::mutex> lock(j.mu);
      if (j.poisoning == 0) break;
    }
    sched_yield();
  }
  std::vector<uint32_t> lost = LostNow(j);
  if (j.read_err) {
    Fail(j, j.read_err, "pread");
    return FinishInPlace(j, in_block, lost);
  }
  int e = lazyfd::Register(b, j.size);  // UFFDIO_MOVE's destination must be registered
  if (e) {
    Fail(j, e, "ioctl(UFFDIO_REGISTER)");
    return FinishInPlace(j, in_block, lost);
  }
  // The pieces touched so far go back into the block with the guest's writes since: moved, not
  // copied (a write racing the move lands before it or faults and waits for the swap). A page the
  // move cannot take (pinned by O_DIRECT or an io_uring fixed buffer past MoveBack's wait, or locked
  // since) calls the swap off: the range is finished in place, the pages that did move are copied
  // back from the block, and the pinned one never leaves. Never a retry that drops what a failed
  // call moved already, never a loss for a healthy page.
  int move_err = 0;
  for (uint32_t p = 0; p < j.pieces && !move_err; p++) {
    if (j.piece[p].load(std::memory_order_relaxed) != kTaken) continue;
    uint64_t off = static_cast<uint64_t>(p) * kPiece, end = std::min(off + kPiece, j.size);
    in_block[p] = 1;  // from here the block may hold some of its pages: FinishInPlace copies them back
    ForHealthyRuns(lost, off, end, [&](uint64_t a, uint64_t z) {
      // The block's own read of the run goes first: UFFDIO_MOVE only fills missing pages.
      int e = props::Drop(reinterpret_cast<void*>(b + a), z - a);
      if (!e) e = lazyfd::MoveBack(b + a, j.dst + a, z - a);
      move_err = e;
      return e == 0;
    });
    if (!move_err) g_taken_back.fetch_add(1, std::memory_order_relaxed);
  }
  if (move_err) {
    Fail(j, move_err, "ioctl(UFFDIO_MOVE)");
    return FinishInPlace(j, in_block, lost);
  }
  // The lost subpages (those found while moving too) get their markers in the block before it goes in.
  lost = LostNow(j);
  for (uint32_t s : lost) {
    uintptr_t a = b + static_cast<uint64_t>(s) * kSubpage;
    e = props::Drop(reinterpret_cast<void*>(a), kSubpage);
    if (!e) e = lazyfd::Poison(a, kSubpage);
    if (e) {
      Fail(j, e, "ioctl(UFFDIO_POISON)");
      return FinishInPlace(j, in_block, lost);
    }
  }
  bool marked = props::MarkLikeRegion(*j.r, j.block.addr, j.size);
  e = lazyfd::Unregister(b, j.size);
  void* moved = e ? MAP_FAILED
                  : mremap(j.block.addr, j.size, j.size, MREMAP_MAYMOVE | MREMAP_FIXED, reinterpret_cast<void*>(j.dst));
  if (moved == MAP_FAILED) {
    Fail(j, e ? e : errno, e ? "ioctl(UFFDIO_UNREGISTER)" : "mremap");
    return FinishInPlace(j, in_block, lost);
  }
  j.block.addr = nullptr;  // it lives at dst now, unregistered
  // A loss a signal handler marked after the markers went in: guarded in the final mapping.
  for (uint32_t s : LostNow(j)) {
    if (std::binary_search(lost.begin(), lost.end(), s)) continue;
    mapping::Failure f;
    int used = mapping::GuardSubpage(j.dst + static_cast<uint64_t>(s) * kSubpage, props::ChosenGuard(*j.r), &f);
    if (used != HUGETLB_RAS_GUARD_UFFD) j.r->guard.store(HUGETLB_RAS_GUARD_FAULT);  // weakest in use
    lost.insert(std::upper_bound(lost.begin(), lost.end(), s), s);
  }
  lazyfd::Wake(j.dst, j.size);  // the touchers of closed and taken pieces
  if (!marked) props::Note(*j.r, true);
  j.filled_ns = MonotonicNs();  // all of it usable; the collapse below only restores 2 MiB pages
  // Chunks the touched pieces broke into 4 KiB pages go back on 2 MiB pages where nothing is lost.
  for (uint64_t c = 0; c < j.size / kChunk; c++) {
    uint32_t p0 = static_cast<uint32_t>(c * (kChunk / kPiece)), p1 = p0 + static_cast<uint32_t>(kChunk / kPiece);
    if (!std::any_of(in_block.begin() + p0, in_block.begin() + p1, [](uint8_t x) { return x != 0; })) continue;
    uint32_t lo = static_cast<uint32_t>(c * (kChunk / kSubpage)), hi = lo + static_cast<uint32_t>(kChunk / kSubpage);
    if (std::any_of(lost.begin(), lost.end(), [&](uint32_t s) { return s >= lo && s < hi; })) continue;
    if (madvise(reinterpret_cast<void*>(j.dst + c * kChunk), kChunk, MADV_COLLAPSE) == 0)
      g_collapsed.fetch_add(1, std::memory_order_relaxed);
  }
}

}  // namespace ras::lazy
