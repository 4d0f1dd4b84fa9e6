#include "simulate/simulate.h"

#include <errno.h>
#include <sys/mman.h>

#include <algorithm>
#include <mutex>
#include <vector>

#include "capture/signals.h"
#include "capture/stale.h"

namespace ras::simulate {

namespace {

struct FilePoison {
  uint64_t dev, ino, off;  // off: 4 KiB aligned file offset
};
std::mutex g_mu;
std::vector<FilePoison> g_file_poison;

// Address ranges made PROT_NONE to stand for poison; read by the SIGSEGV handler, so lock-free.
constexpr int kMaxRanges = 4096;
struct Range {
  std::atomic<int> live{0};
  std::atomic<uintptr_t> start{0}, end{0};
  std::atomic<int> lsb{0};
  uint64_t dev = 0, ino = 0, file_off = 0;  // the huge page of the file the range belongs to
};
Range g_ranges[kMaxRanges];

int FaultLsb(uintptr_t addr, int max_lsb) {
  for (int i = 0; i < kMaxRanges; i++) {
    Range& r = g_ranges[i];
    if (r.live.load(std::memory_order_acquire) != 1) continue;
    if (addr >= r.start.load(std::memory_order_relaxed) && addr < r.end.load(std::memory_order_relaxed)) {
      int lsb = r.lsb.load(std::memory_order_relaxed);
      if (lsb <= max_lsb) return lsb;
    }
  }
  return 0;
}

bool AddRange(uintptr_t start, uintptr_t end, int lsb, const Region& reg, uint64_t file_off) {
  for (int i = 0; i < kMaxRanges; i++) {
    Range& r = g_ranges[i];
    int expected = 0;
    if (r.live.compare_exchange_strong(expected, 2)) {
      r.start.store(start);
      r.end.store(end);
      r.lsb.store(lsb);
      r.dev = reg.dev;
      r.ino = reg.ino;
      r.file_off = file_off;
      r.live.store(1, std::memory_order_release);
      return true;
    }
  }
  return false;
}

}  // namespace

void Enable() { signals::SetSimulatedFaultHook(FaultLsb); }

int Poison(Region& r, uintptr_t addr, int code, bool send_signal, const char** syscall) {
  uintptr_t sub = addr & ~(kSubpage - 1);
  uint32_t page = r.PageIndex(addr);
  uintptr_t page_addr = r.PageAddress(page);
  uint64_t page_file_off = r.file_offset + (page_addr - r.start);
  uint32_t st = StateOf(r.Word(page).load());
  int lsb = static_cast<int>(r.huge_shift);
  if (st == kSplit) {
    // Ordinary pages now: the kernel would take exactly this 4 KiB page away.
    // The range is known as poison before it becomes inaccessible: a thread faulting in between
    // must find it.
    if (!r.SubpageLost(sub)) {
      // The kernel poisons pages that are there: under a lazy fill this 4 KiB may not be in yet
      // (a poisoned missing page would be one nobody could ever have read). A kernel-mode read
      // brings it in, as any access would (the fault thread serves it).
      stale::KernelCanRead(sub);
      if (!AddRange(sub, sub + kSubpage, kSubpageShift, r, page_file_off)) {
        *syscall = "simulate";
        return ENOSPC;
      }
      if (mprotect(reinterpret_cast<void*>(sub), kSubpage, PROT_NONE) != 0) {
        *syscall = "mprotect";
        return errno;
      }
    }
    lsb = kSubpageShift;
  } else if (st != kLost) {
    {
      std::lock_guard<std::mutex> lock(g_mu);
      uint64_t off = r.file_offset + (sub - r.start);
      bool known = std::any_of(g_file_poison.begin(), g_file_poison.end(), [&](const FilePoison& p) {
        return p.dev == r.dev && p.ino == r.ino && p.off == off;
      });
      if (!known) g_file_poison.push_back({r.dev, r.ino, off});
    }
    if (st == kNormal) {
      if (!AddRange(page_addr, page_addr + r.huge_size, lsb, r, page_file_off)) {
        *syscall = "simulate";
        return ENOSPC;
      }
      if (mprotect(reinterpret_cast<void*>(page_addr), r.huge_size, PROT_NONE) != 0) {
        *syscall = "mprotect";
        return errno;
      }
    }
  }
  if (send_signal) signals::RaiseMemoryError(addr, code, lsb);
  return 0;
}

int64_t ClampRead(uint64_t dev, uint64_t ino, uint64_t off, uint64_t len) {
  std::lock_guard<std::mutex> lock(g_mu);
  uint64_t allowed = len;
  for (const FilePoison& p : g_file_poison) {
    if (p.dev != dev || p.ino != ino) continue;
    if (off >= p.off && off < p.off + kSubpage) return -1;
    if (p.off > off && p.off - off < allowed) allowed = p.off - off;
  }
  return static_cast<int64_t>(allowed);
}

void ForgetFileRange(uint64_t dev, uint64_t ino, uint64_t off, uint64_t len) {
  {
    std::lock_guard<std::mutex> lock(g_mu);
    g_file_poison.erase(std::remove_if(g_file_poison.begin(), g_file_poison.end(),
                                       [&](const FilePoison& p) {
                                         return p.dev == dev && p.ino == ino && p.off >= off && p.off < off + len;
                                       }),
                        g_file_poison.end());
  }
  for (int i = 0; i < kMaxRanges; i++) {
    Range& r = g_ranges[i];
    if (r.live.load() == 1 && r.dev == dev && r.ino == ino && r.file_off >= off && r.file_off < off + len)
      r.live.store(0, std::memory_order_release);
  }
}

void ForgetAddressRange(uintptr_t start, uintptr_t end) {
  for (int i = 0; i < kMaxRanges; i++) {
    Range& r = g_ranges[i];
    if (r.live.load() == 1 && r.start.load() >= start && r.end.load() <= end) r.live.store(0, std::memory_order_release);
  }
}

}  // namespace ras::simulate
