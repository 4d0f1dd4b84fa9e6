#include "split/numa.h"

#include <fcntl.h>
#include <linux/mempolicy.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>

namespace ras::numa {

namespace {
constexpr int kMaxNode = 1024;  // nodemask bits passed to mbind
constexpr int kNeighbours = 8;  // other huge pages asked when the page itself cannot answer

int ReadMultiNode() {
  int fd = open("/sys/devices/system/node/online", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;  // no NUMA support in the kernel: one node
  char buf[256];
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0) return 0;
  buf[n] = 0;
  // "0" on a single-node host; "0-1", "0,2" ... otherwise.
  for (ssize_t i = 0; i < n; i++)
    if (buf[i] == '-' || buf[i] == ',') return 1;
  return 0;
}

// The node of the page at each address (move_pages with no target nodes only asks); -1 per page
// that is not populated or not answerable.
int NodeOfAddress(uintptr_t a) {
  void* pages[1] = {reinterpret_cast<void*>(a)};
  int status[1] = {-1};
  if (syscall(SYS_move_pages, 0, 1UL, pages, nullptr, status, 0) != 0) return -1;
  return status[0] >= 0 ? status[0] : -1;
}
}  // namespace

bool MultiNode() {
  static std::atomic<int> cached{-1};
  int v = cached.load(std::memory_order_relaxed);
  if (v < 0) {
    v = ReadMultiNode();
    cached.store(v, std::memory_order_relaxed);
  }
  return v == 1;
}

int HugePageNode(Region& r, uint32_t page) {
  if (!MultiNode()) return -1;
  int node = -1;
  if (syscall(SYS_get_mempolicy, &node, nullptr, 0UL, reinterpret_cast<void*>(r.PageAddress(page)),
              static_cast<unsigned long>(MPOL_F_NODE | MPOL_F_ADDR)) == 0 && node >= 0)
    return node;
  // Nearest first, both sides. move_pages faults nothing in: an unpopulated page answers -ENOENT.
  for (uint32_t d = 1; d <= kNeighbours; d++) {
    if (page >= d && (node = NodeOfAddress(r.PageAddress(page - d))) >= 0) return node;
    if (page + d < r.pages && (node = NodeOfAddress(r.PageAddress(page + d))) >= 0) return node;
  }
  return -1;
}

void PlaceOn(char* addr, uint64_t len, int node, bool faulted) {
  if (node < 0 || node >= kMaxNode || !addr || len == 0) return;
  if (faulted && NodeOfAddress(reinterpret_cast<uintptr_t>(addr)) == node) return;  // already there
  unsigned long mask[kMaxNode / (8 * sizeof(unsigned long))] = {};
  mask[node / (8 * sizeof(unsigned long))] = 1UL << (node % (8 * sizeof(unsigned long)));
  syscall(SYS_mbind, addr, static_cast<unsigned long>(len), static_cast<unsigned long>(MPOL_PREFERRED), mask,
          static_cast<unsigned long>(kMaxNode), static_cast<unsigned>(faulted ? MPOL_MF_MOVE : 0));
}

Policy PolicyAt(uintptr_t addr) {
  Policy p;
  int mode = 0;
  if (syscall(SYS_get_mempolicy, &mode, p.mask, static_cast<unsigned long>(kMaxNode), reinterpret_cast<void*>(addr),
              static_cast<unsigned long>(MPOL_F_ADDR)) != 0)
    return Policy{};
  p.mode = mode;
  p.set = (mode & ~(MPOL_F_STATIC_NODES | MPOL_F_RELATIVE_NODES)) != MPOL_DEFAULT;
  return p;
}

void PlaceLike(char* addr, uint64_t len, const Policy& p, int node, bool faulted) {
  if (!p.set) return PlaceOn(addr, len, node, faulted);
  if (!addr || len == 0) return;
  syscall(SYS_mbind, addr, static_cast<unsigned long>(len), static_cast<unsigned long>(p.mode), p.mask,
          static_cast<unsigned long>(kMaxNode), static_cast<unsigned>(faulted ? MPOL_MF_MOVE : 0));
}

}  // namespace ras::numa
