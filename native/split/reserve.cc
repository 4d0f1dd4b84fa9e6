#include "split/reserve.h"

#include <errno.h>
#include <sys/mman.h>

#include <algorithm>
#include <mutex>

#include "linux_compat.h"
#include "state/state.h"

namespace ras::mapping {

namespace {
constexpr uint64_t k2M = 2ull << 20;

struct PoolState {
  Pool info;
  std::vector<char*> blocks;  // each pre-faulted, `info.size` bytes, 2 MiB aligned
};

std::mutex g_reserve_mu;
std::vector<PoolState> g_pools;  // sorted by size: the small pages refill first (they come in bursts)

uint64_t AlignFor(uint64_t size) { return size < k2M ? kSubpage : k2M; }

// In 32 MiB steps: each step holds mmap_lock only briefly, so a recovery's mremap is not held up.
void Prefault(char* addr, uint64_t size) {
  constexpr uint64_t kStep = 32ull << 20;
  for (uint64_t off = 0; off < size; off += kStep) {
    uint64_t n = size - off < kStep ? size - off : kStep;
    if (madvise(addr + off, n, MADV_POPULATE_WRITE) != 0)
      for (uint64_t i = 0; i < n; i += kSubpage) addr[off + i] = 0;  // kernels before 5.14
  }
}

PoolState* Find(uint64_t size) {
  for (PoolState& p : g_pools)
    if (p.info.size == size) return &p;
  return nullptr;
}
}  // namespace

// Anonymous memory aligned for THP, with MADV_HUGEPAGE asked for (ignored where THP is off), and
// MADV_DONTFORK.
char* MapAligned(uint64_t size, Failure* fail) {
  uint64_t align = AlignFor(size);
  uint64_t span = size + align;
  void* raw = mmap(nullptr, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (raw == MAP_FAILED) {
    *fail = {errno, "mmap"};
    return nullptr;
  }
  uintptr_t start = (reinterpret_cast<uintptr_t>(raw) + align - 1) & ~(align - 1);
  uintptr_t raw_end = reinterpret_cast<uintptr_t>(raw) + span;
  if (start > reinterpret_cast<uintptr_t>(raw)) munmap(raw, start - reinterpret_cast<uintptr_t>(raw));
  if (raw_end > start + size) munmap(reinterpret_cast<void*>(start + size), raw_end - (start + size));
  madvise(reinterpret_cast<void*>(start), size, MADV_HUGEPAGE);
  // Guest RAM: a VMM that forks (a helper, a migration child) must not copy it or share it
  // copy-on-write. The flag moves with the memory when it is swapped in place.
  madvise(reinterpret_cast<void*>(start), size, MADV_DONTFORK);
  return reinterpret_cast<char*>(start);
}

bool TakeBlock(uint64_t size, Block* out, Failure* fail) {
  {
    std::lock_guard<std::mutex> lock(g_reserve_mu);
    PoolState* p = Find(size);
    if (p && !p->blocks.empty()) {
      *out = {p->blocks.back(), size, true};
      p->blocks.pop_back();
      p->info.taken++;
      return true;
    }
    if (p) p->info.missed++;
  }
  char* m = MapAligned(size, fail);
  if (!m) return false;
  *out = {m, size, false};
  return true;
}

void DropBlock(Block& b) {
  if (b.addr) munmap(b.addr, b.size);
  b = Block{};
}

void SetReservePools(const std::vector<Pool>& wanted) {
  std::vector<char*> drop;
  std::vector<uint64_t> drop_sizes;
  {
    std::lock_guard<std::mutex> lock(g_reserve_mu);
    std::vector<PoolState> next;
    for (const Pool& w : wanted) {
      if (w.size == 0 || w.depth == 0) continue;
      PoolState ps;
      if (PoolState* old = Find(w.size)) ps = std::move(*old);
      ps.info.size = w.size;
      ps.info.depth = w.depth;
      while (ps.blocks.size() > w.depth) {  // the depth shrank: give the surplus back
        drop.push_back(ps.blocks.back());
        drop_sizes.push_back(w.size);
        ps.blocks.pop_back();
      }
      next.push_back(std::move(ps));
    }
    for (PoolState& old : g_pools) {
      bool kept = std::any_of(next.begin(), next.end(), [&](const PoolState& n) { return n.info.size == old.info.size; });
      if (kept) continue;
      for (char* b : old.blocks) {
        drop.push_back(b);
        drop_sizes.push_back(old.info.size);
      }
    }
    std::sort(next.begin(), next.end(), [](const PoolState& a, const PoolState& b) { return a.info.size < b.info.size; });
    g_pools = std::move(next);
  }
  for (size_t i = 0; i < drop.size(); i++) munmap(drop[i], drop_sizes[i]);
}

std::vector<Pool> ReservePools() {
  std::lock_guard<std::mutex> lock(g_reserve_mu);
  std::vector<Pool> out;
  for (const PoolState& p : g_pools) {
    Pool i = p.info;
    i.ready = static_cast<uint32_t>(p.blocks.size());
    out.push_back(i);
  }
  return out;
}

uint64_t ReserveBytes() {
  std::lock_guard<std::mutex> lock(g_reserve_mu);
  uint64_t total = 0;
  for (const PoolState& p : g_pools) total += p.info.size * p.blocks.size();
  return total;
}

uint64_t ReserveTarget() {
  std::lock_guard<std::mutex> lock(g_reserve_mu);
  uint64_t total = 0;
  for (const PoolState& p : g_pools) total += p.info.size * p.info.depth;
  return total;
}

bool RefillOne() {
  uint64_t size = 0;
  {
    std::lock_guard<std::mutex> lock(g_reserve_mu);
    for (const PoolState& p : g_pools)
      if (p.blocks.size() < p.info.depth) {
        size = p.info.size;
        break;
      }
  }
  if (!size) return false;
  Failure fail;
  char* m = MapAligned(size, &fail);
  if (!m) return false;
  Prefault(m, size);  // outside the lock: a recovery may take a ready block meanwhile
  std::lock_guard<std::mutex> lock(g_reserve_mu);
  PoolState* p = Find(size);
  if (!p || p->blocks.size() >= p->info.depth) {
    munmap(m, size);  // the pool shrank or went meanwhile
    return true;
  }
  p->blocks.push_back(m);
  return true;
}

void RefillReserve() {
  while (RefillOne()) {
  }
}

void ReleaseReserve() {
  std::lock_guard<std::mutex> lock(g_reserve_mu);
  for (PoolState& p : g_pools) {
    for (char* b : p.blocks) munmap(b, p.info.size);
    p.blocks.clear();
  }
}

}  // namespace ras::mapping
