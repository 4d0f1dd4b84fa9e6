#include "recovery.h"

#include <errno.h>
#include <sys/mman.h>

#include <algorithm>
#include <cstring>
#include <thread>

#include "fileio.h"
#include "mapping.h"

#ifndef MADV_HWPOISON
#define MADV_HWPOISON 100
#endif

namespace ras::recovery {

namespace {
constexpr uint64_t kChunk = 8ull << 20;           // large preads: few syscalls
constexpr uint64_t kParallelFrom = 64ull << 20;   // below this a second thread costs more than it saves
std::atomic<int> g_read_threads{2};

fileio::ReadBack ReadPage(Region& r, uint32_t page, char* dst) {
  uint64_t off = r.file_offset + (static_cast<uint64_t>(page) << r.huge_shift);
  uint64_t len = r.huge_size;
  int threads = g_read_threads.load();
  if (len < kParallelFrom || threads < 2) return fileio::ReadAround(r.fd, r.dev, r.ino, off, dst, len, kChunk, 0);
  uint64_t part = (len / static_cast<uint64_t>(threads) + kChunk - 1) & ~(kChunk - 1);
  std::vector<fileio::ReadBack> parts(static_cast<size_t>(threads));
  std::vector<std::thread> pool;
  for (int t = 1; t < threads; t++) {
    uint64_t s = part * static_cast<uint64_t>(t);
    if (s >= len) break;
    uint64_t n = std::min(part, len - s);
    pool.emplace_back([&, t, s, n] {
      parts[static_cast<size_t>(t)] =
          fileio::ReadAround(r.fd, r.dev, r.ino, off + s, dst + s, n, kChunk, static_cast<uint32_t>(s / kSubpage));
    });
  }
  parts[0] = fileio::ReadAround(r.fd, r.dev, r.ino, off, dst, std::min(part, len), kChunk, 0);
  for (std::thread& th : pool) th.join();
  fileio::ReadBack all;
  for (fileio::ReadBack& p : parts) {
    all.bytes += p.bytes;
    all.calls += p.calls;
    all.lost.insert(all.lost.end(), p.lost.begin(), p.lost.end());
    if (p.err && !all.err) all.err = p.err;
  }
  return all;
}
}  // namespace

void SetReadThreads(int n) { g_read_threads.store(n < 1 ? 1 : n); }

Outcome SplitHugePage(Region& r, uint32_t page, const std::vector<uint32_t>& known_lost) {
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
  fileio::ReadBack rb = ReadPage(r, page, block.addr);
  out.reads = rb.calls;
  for (uint32_t s : known_lost) {
    if (std::find(rb.lost.begin(), rb.lost.end(), s) == rb.lost.end()) {
      rb.lost.push_back(s);
      memset(block.addr + static_cast<uint64_t>(s) * kSubpage, 0, kSubpage);
      rb.bytes -= std::min<uint64_t>(rb.bytes, kSubpage);
    }
  }
  std::sort(rb.lost.begin(), rb.lost.end());
  uint64_t subpages = r.huge_size / kSubpage;
  if (rb.err || rb.lost.size() >= subpages) {
    // Nothing (or not all) could be read: no private copy may stand in for this page.
    mapping::DropBlock(block);
    out.refuse = kReadBackFailed;
    out.err = rb.err ? rb.err : EIO;
    out.syscall = "pread";
    return out;
  }
  // Lost subpages become inaccessible before anybody can see them: really poisoned where the
  // region asks for it and the kernel allows it (the worker swallows its own SIGBUS), else PROT_NONE.
  bool hwpoisoned = false;
  if (r.hwpoison_guard.load() && !rb.lost.empty()) {
    ThreadSlot* slot = ClaimSlot(kSlotSelfPoison);
    hwpoisoned = true;
    for (uint32_t s : rb.lost) {
      if (madvise(block.addr + static_cast<uint64_t>(s) * kSubpage, kSubpage, MADV_HWPOISON) != 0) {
        hwpoisoned = false;
        break;
      }
    }
    ReleaseSlot(slot);
  }
  uintptr_t target = r.PageAddress(page);
  for (uint32_t s : rb.lost) r.MarkSubpageLost(target + static_cast<uint64_t>(s) * kSubpage);
  if (!mapping::SwapIn(block, target, rb.lost, hwpoisoned, &mf)) {
    if (block.addr) mapping::DropBlock(block);
    out.refuse = mf.err == ENOMEM ? kNoMemory : kReadBackFailed;
    out.err = mf.err;
    out.syscall = mf.syscall;
    return out;
  }
  out.ok = true;
  out.bytes = rb.bytes;
  out.lost = std::move(rb.lost);
  out.hwpoisoned = hwpoisoned;
  out.ns = MonotonicNs() - t0;
  return out;
}

bool SubpageUnreadable(Region& r, uintptr_t addr) {
  char buf[kSubpage];
  uint64_t off = r.file_offset + ((addr & ~(kSubpage - 1)) - r.start);
  fileio::ReadBack rb = fileio::ReadAround(r.fd, r.dev, r.ino, off, buf, kSubpage, kSubpage, 0);
  return !rb.lost.empty();
}

}  // namespace ras::recovery
