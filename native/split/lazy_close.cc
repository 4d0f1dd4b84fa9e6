// The end of a lazy recovery's back half (split/lazy_job.h): the pieces touched meanwhile are
// moved back into the block with the guest's writes, the lost subpages get their markers there, and
// one mremap puts the block in place of the registered range; where the block cannot go in, the
// range is finished in place as 4 KiB pages.
#include <errno.h>
#include <sched.h>
#include <sys/mman.h>

#include <algorithm>

#include "split/lazy_job.h"
#include "split/lazy_runs.h"
#include "split/lazy_uffd.h"
#include "split/mapping.h"
#include "split/props.h"

#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE 25  // Linux >= 6.1
#endif

namespace ras::lazy {

namespace {
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

// One piece of a range finished in place: a closed piece read again from the file (a loss the file
// shows since is found), one moved into the block copied back from it; a touched piece that never
// moved stays. The block's memory there is given back.
void FinishPiece(Job& j, uint32_t p, const std::vector<uint8_t>& in_block, const std::vector<uint32_t>& lost) {
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

// A loss a signal handler marked after the markers went in: guarded in the final mapping (added to
// `lost`, sorted).
void GuardLate(Job& j, std::vector<uint32_t>& lost) {
  for (uint32_t s : LostNow(j)) {
    if (std::binary_search(lost.begin(), lost.end(), s)) continue;
    mapping::Failure f;
    int used = mapping::GuardSubpage(j.dst + static_cast<uint64_t>(s) * kSubpage, props::ChosenGuard(*j.r), &f);
    if (used != HUGETLB_RAS_GUARD_UFFD) j.r->guard.store(HUGETLB_RAS_GUARD_FAULT);  // weakest in use
    lost.insert(std::upper_bound(lost.begin(), lost.end(), s), s);
  }
}

void CountInPlace(Job& j) {
  if (!j.in_place_finish) g_in_place_finishes.fetch_add(1, std::memory_order_relaxed);
  j.in_place_finish = true;
}

// The block cannot replace the range (a failure after the front half, a page pinned for I/O): finish
// in place instead, as 4 KiB pages, piece by piece: the block's memory is given back as the range
// fills, so a 1 GiB page never needs two copies at once.
void FinishInPlace(Job& j, const std::vector<uint8_t>& in_block, const std::vector<uint32_t>& lost) {
  CountInPlace(j);
  lazyfd::Unregister(reinterpret_cast<uintptr_t>(j.block.addr), j.size);  // if it was registered
  for (uint32_t p = 0; p < j.pieces; p++) FinishPiece(j, p, in_block, lost);
  lazyfd::Wake(j.dst, j.size);
  j.filled_ns = MonotonicNs();
  int e = lazyfd::Unregister(j.dst, j.size);
  if (e) Fail(j, e, "ioctl(UFFDIO_UNREGISTER)");
  mapping::DropBlock(j.block);
}

// A page bigger than a chunk (1 GiB) with a page the move could not take (pinned for I/O): only the
// 2 MiB chunks holding one (`stay`) are finished in place; every other chunk of the block replaces
// its part of the range by mremap, in one call per run of them. The page ends as a few VMAs, the
// pinned page never leaves, and no more than those chunks are on 4 KiB pages. `lost`: its markers
// are in the block's moving chunks already.
void SwapAround(Job& j, const std::vector<uint8_t>& stay, const std::vector<uint8_t>& in_block,
                std::vector<uint32_t> lost) {
  CountInPlace(j);
  const uint64_t chunks = j.size / kChunk;
  const uint32_t per_chunk = static_cast<uint32_t>(kChunk / kPiece);
  bool marked = props::MarkLikeRegion(*j.r, j.block.addr, j.size);
  int e = lazyfd::Unregister(reinterpret_cast<uintptr_t>(j.block.addr), j.size);
  if (e) {
    Fail(j, e, "ioctl(UFFDIO_UNREGISTER)");
    return FinishInPlace(j, in_block, lost);
  }
  std::vector<uint8_t> left(chunks, 0);  // the block still holds this chunk (finished in place)
  for (uint64_t c = 0; c < chunks; c++) {
    if (!stay[c]) continue;
    for (uint32_t p = static_cast<uint32_t>(c) * per_chunk; p < (c + 1) * per_chunk; p++) FinishPiece(j, p, in_block, lost);
    left[c] = 1;
  }
  for (uint64_t c0 = 0; c0 < chunks;) {
    if (stay[c0]) {
      c0++;
      continue;
    }
    uint64_t c1 = c0;
    while (c1 < chunks && !stay[c1]) c1++;
    uint64_t off = c0 * kChunk, len = (c1 - c0) * kChunk;
    if (mremap(j.block.addr + off, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, reinterpret_cast<void*>(j.dst + off)) == MAP_FAILED) {
      Fail(j, errno, "mremap");
      for (uint64_t c = c0; c < c1; c++) {
        for (uint32_t p = static_cast<uint32_t>(c) * per_chunk; p < (c + 1) * per_chunk; p++) FinishPiece(j, p, in_block, lost);
        left[c] = 1;
      }
    }
    c0 = c1;
  }
  // Only the chunks the block still holds are unmapped: the others live at dst now (their old
  // addresses may be anyone's mapping already).
  for (uint64_t c = 0; c < chunks; c++)
    if (left[c]) munmap(j.block.addr + c * kChunk, kChunk);
  j.block = mapping::Block{};
  lazyfd::Wake(j.dst, j.size);
  j.filled_ns = MonotonicNs();
  e = lazyfd::Unregister(j.dst, j.size);  // the chunks left in place (the others are not registered)
  if (e) Fail(j, e, "ioctl(UFFDIO_UNREGISTER)");
  GuardLate(j, lost);
  if (!marked) props::Note(*j.r, true);
  for (uint64_t c = 0; c < chunks; c++) {
    uint32_t lo = static_cast<uint32_t>(c * (kChunk / kSubpage)), hi = lo + static_cast<uint32_t>(kChunk / kSubpage);
    if (!left[c] || std::any_of(lost.begin(), lost.end(), [&](uint32_t s) { return s >= lo && s < hi; })) continue;
    if (madvise(reinterpret_cast<void*>(j.dst + c * kChunk), kChunk, MADV_COLLAPSE) == 0)  // fails where a page is pinned
      g_collapsed.fetch_add(1, std::memory_order_relaxed);
  }
}
}  // namespace

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
  // A page bigger than a chunk keeps going past a failed move: only that chunk stays in place
  // (SwapAround), the rest of the block still goes in.
  const bool big = j.size > kChunk;
  const uint32_t per_chunk = static_cast<uint32_t>(kChunk / kPiece);
  std::vector<uint8_t> stay(j.size / kChunk, 0);
  bool any_stay = false;
  int move_err = 0;
  for (uint32_t p = 0; p < j.pieces && !move_err; p++) {
    if (stay[p / per_chunk]) continue;
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
    if (move_err && big) {
      Fail(j, move_err, "ioctl(UFFDIO_MOVE)");
      stay[p / per_chunk] = 1;
      any_stay = true;
      move_err = 0;
      continue;
    }
    if (!move_err) g_taken_back.fetch_add(1, std::memory_order_relaxed);
  }
  if (move_err) {
    Fail(j, move_err, "ioctl(UFFDIO_MOVE)");
    return FinishInPlace(j, in_block, lost);
  }
  // The lost subpages (those found while moving too) get their markers in the block before it goes in.
  lost = LostNow(j);
  for (uint32_t s : lost) {
    if (stay[static_cast<uint64_t>(s) * kSubpage / kChunk]) continue;  // finished in place: marked at dst
    uintptr_t a = b + static_cast<uint64_t>(s) * kSubpage;
    e = props::Drop(reinterpret_cast<void*>(a), kSubpage);
    if (!e) e = lazyfd::Poison(a, kSubpage);
    if (e) {
      Fail(j, e, "ioctl(UFFDIO_POISON)");
      return FinishInPlace(j, in_block, lost);
    }
  }
  if (any_stay) return SwapAround(j, stay, in_block, lost);
  bool marked = props::MarkLikeRegion(*j.r, j.block.addr, j.size);
  e = lazyfd::Unregister(b, j.size);
  void* moved = e ? MAP_FAILED
                  : mremap(j.block.addr, j.size, j.size, MREMAP_MAYMOVE | MREMAP_FIXED, reinterpret_cast<void*>(j.dst));
  if (moved == MAP_FAILED) {
    Fail(j, e ? e : errno, e ? "ioctl(UFFDIO_UNREGISTER)" : "mremap");
    return FinishInPlace(j, in_block, lost);
  }
  j.block.addr = nullptr;  // it lives at dst now, unregistered
  GuardLate(j, lost);
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
