#include "split/reserve.h"

#include <errno.h>
#include <sys/mman.h>

#include <mutex>
#include <vector>

#include "linux_compat.h"
#include "state/state.h"

namespace ras::mapping {

namespace {
constexpr uint64_t k2M = 2ull << 20;

std::mutex g_reserve_mu;
std::vector<Block> g_reserve;  // each block prefaulted, 2 MiB aligned
uint64_t g_reserve_target = 0;

uint64_t AlignFor(uint64_t size) { return size < k2M ? kSubpage : k2M; }

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

// In 32 MiB steps: each step holds mmap_lock only briefly, so a recovery's mremap is not held up.
bool Prefault(char* addr, uint64_t size) {
  constexpr uint64_t kStep = 32ull << 20;
  for (uint64_t off = 0; off < size; off += kStep) {
    uint64_t n = size - off < kStep ? size - off : kStep;
    if (madvise(addr + off, n, MADV_POPULATE_WRITE) != 0)
      for (uint64_t i = 0; i < n; i += kSubpage) addr[off + i] = 0;  // kernels before 5.14
  }
  return true;
}
}  // namespace

bool TakeBlock(uint64_t size, Block* out, Failure* fail) {
  {
    std::lock_guard<std::mutex> lock(g_reserve_mu);
    for (size_t i = 0; i < g_reserve.size(); i++) {
      Block& b = g_reserve[i];
      if (b.size < size) continue;
      // Carve from the front: blocks are 2 MiB aligned and sizes are multiples of the alignment.
      *out = {b.addr, size, true};
      b.addr += size;
      b.size -= size;
      if (b.size == 0) g_reserve.erase(g_reserve.begin() + static_cast<long>(i));
      return true;
    }
  }
  char* p = MapAligned(size, fail);
  if (!p) return false;
  *out = {p, size, false};
  return true;
}

void DropBlock(Block& b) {
  if (b.addr) munmap(b.addr, b.size);
  b = Block{};
}

void SetReserveTarget(uint64_t bytes) {
  std::lock_guard<std::mutex> lock(g_reserve_mu);
  g_reserve_target = bytes;
}

uint64_t ReserveBytes() {
  std::lock_guard<std::mutex> lock(g_reserve_mu);
  uint64_t total = 0;
  for (const Block& b : g_reserve) total += b.size;
  return total;
}

uint64_t ReserveTarget() {
  std::lock_guard<std::mutex> lock(g_reserve_mu);
  return g_reserve_target;
}

void RefillReserve() {
  uint64_t have = ReserveBytes();
  uint64_t target = ReserveTarget();
  if (have >= target) {
    if (have > target) ReleaseReserve();  // the target shrank: give it all back, refill next time
    return;
  }
  uint64_t need = (target - have + k2M - 1) & ~(k2M - 1);
  Failure fail;
  char* p = MapAligned(need, &fail);
  if (!p) return;
  Prefault(p, need);
  std::lock_guard<std::mutex> lock(g_reserve_mu);
  g_reserve.push_back({p, need, true});
}

void ReleaseReserve() {
  std::lock_guard<std::mutex> lock(g_reserve_mu);
  for (Block& b : g_reserve) munmap(b.addr, b.size);
  g_reserve.clear();
}

}  // namespace ras::mapping
