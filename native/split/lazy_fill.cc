// The reads of a lazy recovery (split/lazy_job.h has the piece states): a toucher's 64 KiB piece
// read from the file and copied into the registered range (the front half, and the fault thread for
// later touchers), and the back half's read of the whole page into the block off to the side
// (split/lazy_close.cc then swaps it in).
#include <errno.h>
#include <sys/mman.h>

#include <algorithm>
#include <cstdlib>

#include "capi/capi.h"
#include "linux_compat.h"
#include "split/fileio.h"
#include "split/lazy_job.h"
#include "split/lazy_runs.h"
#include "split/lazy_uffd.h"
#include "split/numa.h"
#include "state/sys.h"

namespace ras::lazy {

std::atomic<uint64_t> g_fault_fills{0}, g_taken_back{0}, g_collapsed{0}, g_in_place_finishes{0};

namespace {
// Each thread that fills pieces (the lanes and the fault thread) reads into its own buffer.
char* PieceBuffer() {
  static thread_local char* buf = nullptr;
  if (!buf) buf = static_cast<char*>(aligned_alloc(kSubpage, kPiece));
  return buf;
}
}  // namespace

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
    // A block that is not from the reserve is fresh memory: faulted in here, chunk by chunk (after
    // its NUMA placement above), so the back half says how long its memory took apart from the read.
    // EINVAL (no MADV_POPULATE_WRITE before 5.14): the read faults it, uncounted.
    if (!j.block.from_reserve) {
      uint64_t t0 = MonotonicNs();
      if (madvise(j.block.addr + j.read_off, len, MADV_POPULATE_WRITE) == 0) j.block_fault_ns += MonotonicNs() - t0;
    }
    fileio::ReadBack rb = fileio::ReadAround(r.fd, r.dev, r.ino, j.file_off + j.read_off, j.block.addr + j.read_off, len, len,
                                             static_cast<uint32_t>(j.read_off / kSubpage));
    {
      std::lock_guard<std::mutex> lock(j.mu);
      j.reads += rb.calls;
    }
    j.read_err = rb.err;
    // A failed read of a piece a toucher claimed is no loss: that piece's own read decided (a
    // failure there marked it), and its copy, with the guest's writes since, is what the swap keeps
    // (a poison that landed since hit the old page nobody maps). Only a piece still missing takes
    // the block's read. The check follows the read: a piece claimed after it reads the file after
    // the poison too, and finds the same loss.
    if (!rb.err)
      for (uint32_t s : rb.lost)
        if (j.piece[s * kSubpage / kPiece].load(std::memory_order_acquire) == kMissing)
          MarkLost(j, static_cast<uint64_t>(s) * kSubpage);
    j.read_off += len;
    budget -= len;
  }
  return j.read_off >= j.size || j.read_err;
}

}  // namespace ras::lazy
