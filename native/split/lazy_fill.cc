// Filling a lazy replacement: claims are per 2 MiB chunk (untouched / whole by a filler / piece by
// piece) and per 64 KiB piece (missing / filling / done), all lock-free, so the fault thread never
// waits behind a filler: a piece somebody is filling is left alone (its move wakes the waiters).
#include <errno.h>

#include <algorithm>

#include "capi/capi.h"
#include "split/fileio.h"
#include "split/lazy_job.h"
#include "split/lazy_uffd.h"

namespace ras::lazy {

std::atomic<uint64_t> g_fault_fills{0}, g_chunk_moves{0}, g_collapsed{0}, g_move_fallbacks{0};

namespace {
constexpr uint32_t kRunPieces = 4;  // 256 KiB per background run in a piecewise chunk

void Fail(Job& j, int e, const char* sc) {
  int zero = 0;
  if (j.err.compare_exchange_strong(zero, e)) j.err_syscall = sc;
}

bool Premarked(Job& j, uint32_t s) {
  std::lock_guard<std::mutex> lock(j.mu);
  return std::find(j.premarked.begin(), j.premarked.end(), s) != j.premarked.end();
}

// Lost from now on: marked before its marker goes in, so a toucher's SIGBUS is taken for what it is.
void MarkLost(Job& j, uint64_t off) {
  j.r->MarkSubpageLost(j.dst + off);
  capi::RecordLost(*j.r, j.dst + off, kSubpage, j.rep.code);
  int e = lazyfd::Poison(j.dst + off, kSubpage);
  if (e && e != EEXIST) Fail(j, e, "ioctl(UFFDIO_POISON)");
  std::lock_guard<std::mutex> lock(j.mu);
  j.lost.push_back(static_cast<uint32_t>(off / kSubpage));
}

// Moves the healthy run [run, end) in. A run the kernel refuses as one (a subpage guarded with
// PROT_NONE meanwhile splits the VMA: EINVAL) goes page by page; a page that still cannot go in is
// lost (never a hole that reads as zeros), unless it is lost and guarded already.
uint64_t MoveRun(Job& j, uint64_t run, uint64_t end) {
  uintptr_t src = reinterpret_cast<uintptr_t>(j.staging.addr);
  if (lazyfd::Move(j.dst + run, src + run, end - run) == 0) return end - run;
  uint64_t healthy = 0;
  for (uint64_t a = run; a < end; a += kSubpage) {
    int e = lazyfd::Move(j.dst + a, src + a, kSubpage);
    if (e == 0 || e == EEXIST) {
      healthy += kSubpage;
      continue;
    }
    if (j.r->SubpageLost(j.dst + a)) continue;
    // Whatever kept it from moving, the file still has it: read it again and copy it in.
    alignas(64) static thread_local char buf[kSubpage];
    fileio::ReadBack rb = fileio::ReadAround(j.r->fd, j.r->dev, j.r->ino, j.file_off + a, buf, kSubpage, kSubpage,
                                             static_cast<uint32_t>(a / kSubpage));
    g_move_fallbacks.fetch_add(1, std::memory_order_relaxed);
    if (!rb.err && rb.lost.empty()) {
      int c = lazyfd::Copy(j.dst + a, reinterpret_cast<uintptr_t>(buf), kSubpage);
      if (c == 0 || c == EEXIST) {
        healthy += kSubpage;
        continue;
      }
      e = c;
    }
    Fail(j, e, "ioctl(UFFDIO_MOVE)");
    MarkLost(j, a);
  }
  return healthy;
}

// [off, off+len) of the page has been read into staging (lost subpages in `lost`, sorted): marks
// the losses, places their markers and moves the healthy runs in. Returns healthy bytes.
uint64_t Install(Job& j, uint64_t off, uint64_t len, const std::vector<uint32_t>& lost) {
  uint64_t healthy = 0;
  uint64_t run = off;
  for (size_t i = 0; i <= lost.size(); i++) {
    uint64_t end = i < lost.size() ? static_cast<uint64_t>(lost[i]) * kSubpage : off + len;
    if (end > run) healthy += MoveRun(j, run, end);
    if (i == lost.size()) break;
    if (!Premarked(j, lost[i])) MarkLost(j, end);
    run = end + kSubpage;
  }
  return healthy;
}

uint64_t ReadInstall(Job& j, uint64_t off, uint64_t len) {
  fileio::ReadBack rb = fileio::ReadAround(j.r->fd, j.r->dev, j.r->ino, j.file_off + off, j.staging.addr + off, len,
                                           len, static_cast<uint32_t>(off / kSubpage));
  if (rb.err) {
    // Not a poisoned subpage but a failed read (the file shrank, an I/O error): what was read
    // cannot be told from what was not, so none of it goes in as data.
    Fail(j, rb.err, "pread");
    rb.lost.clear();
    for (uint64_t a = off; a < off + len; a += kSubpage) rb.lost.push_back(static_cast<uint32_t>(a / kSubpage));
  }
  std::sort(rb.lost.begin(), rb.lost.end());
  // A subpage that got its marker before the move reads as lost again: not moved, not counted.
  uint64_t healthy = Install(j, off, len, rb.lost);
  std::lock_guard<std::mutex> lock(j.mu);
  j.bytes += healthy;
  j.reads += rb.calls;
  return healthy;
}
}  // namespace

void FillPieces(Job& j, uint32_t p0, uint32_t p1) {
  ReadInstall(j, static_cast<uint64_t>(p0) * kPiece, static_cast<uint64_t>(p1 - p0) * kPiece);
  for (uint32_t p = p0; p < p1; p++) j.piece[p].store(kDone, std::memory_order_release);
  j.done.fetch_add(p1 - p0, std::memory_order_acq_rel);
}

void FillChunk(Job& j, uint32_t c) {
  uint64_t off = static_cast<uint64_t>(c) * kChunk;
  uint64_t len = std::min(kChunk, j.size - off);
  uint32_t p0 = c * j.pieces_per_chunk;
  uint32_t p1 = std::min(j.pieces, p0 + j.pieces_per_chunk);
  for (uint32_t p = p0; p < p1; p++) j.piece[p].store(kFilling, std::memory_order_relaxed);
  // Healthy and aligned: one UFFDIO_MOVE of the PMD-mapped THP (the chunk stays a 2 MiB page).
  if (ReadInstall(j, off, len) == len) g_chunk_moves.fetch_add(1, std::memory_order_relaxed);
  for (uint32_t p = p0; p < p1; p++) j.piece[p].store(kDone, std::memory_order_release);
  j.done.fetch_add(p1 - p0, std::memory_order_acq_rel);
}

void ServeFault(Job& j, uintptr_t addr) {
  uint64_t off = (addr - j.dst) & ~(kSubpage - 1);
  uint32_t c = static_cast<uint32_t>(off / kChunk);
  uint8_t cs = j.chunk[c].load(std::memory_order_acquire);
  if (cs == kUntouched && !j.chunk[c].compare_exchange_strong(cs, kPiecewise)) {
    // A filler took it whole meanwhile (its move wakes us), or somebody made it piecewise.
  }
  cs = j.chunk[c].load(std::memory_order_acquire);
  if (cs == kWhole) return;
  uint32_t p = static_cast<uint32_t>(off / kPiece);
  uint8_t ps = kMissing;
  if (j.piece[p].compare_exchange_strong(ps, kFilling)) {
    FillPieces(j, p, p + 1);
    g_fault_fills.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  // Being filled: its move wakes the waiter. In place already: a late message (the waiter was
  // woken), or the page was dropped since (MADV_DONTNEED): then it reads as zeros, as anonymous
  // memory does after a drop; a wake alone would send the thread round again for ever.
  if (ps != kDone) return;
  int e = j.r->SubpageLost(j.dst + off) ? lazyfd::Poison(j.dst + off, kSubpage) : lazyfd::ZeroPage(j.dst + off, kSubpage);
  if (e == EEXIST) lazyfd::Wake(j.dst + off, kSubpage);
}

bool FillSome(Job& j) {
  for (;;) {
    uint32_t c = j.next_chunk.fetch_add(1, std::memory_order_acq_rel);
    if (c >= j.chunks) break;
    uint8_t cs = kUntouched;
    if (j.chunk[c].compare_exchange_strong(cs, kWhole)) {
      FillChunk(j, c);
      return true;
    }
  }
  // Piecewise chunks: claim runs of missing pieces (one read and one move per run).
  for (uint32_t p = 0; p < j.pieces; p++) {
    if (j.chunk[p / j.pieces_per_chunk].load(std::memory_order_acquire) != kPiecewise) {
      p = (p / j.pieces_per_chunk + 1) * j.pieces_per_chunk - 1;  // a whole chunk: its filler's
      continue;
    }
    uint8_t ps = kMissing;
    if (!j.piece[p].compare_exchange_strong(ps, kFilling)) continue;
    uint32_t end = p + 1;
    // Short runs: a thread touching a piece a filler holds waits for that run only.
    uint32_t chunk_end = std::min((p / j.pieces_per_chunk + 1) * j.pieces_per_chunk, p + kRunPieces);
    while (end < std::min(j.pieces, chunk_end)) {
      uint8_t m = kMissing;
      if (!j.piece[end].compare_exchange_strong(m, kFilling)) break;
      end++;
    }
    FillPieces(j, p, end);
    return true;
  }
  return false;
}

}  // namespace ras::lazy
