#include "testing/swap_hold.h"

#include <errno.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>

namespace ras::testing {

namespace {
std::atomic<int> g_hold{0};
}

int HoldInSwap(int set) {
  if (set >= 0) g_hold.store(set);
  return g_hold.load();
}

void AtSwapWindow() {
  for (int armed = 1; g_hold.compare_exchange_strong(armed, 2);)
    while (g_hold.load() == 2) usleep(1000);
}

int KernelRead(uintptr_t addr, uint64_t len, char* out) {
  int fd = memfd_create("ras-kernel-read", MFD_CLOEXEC);
  if (fd < 0) return errno;
  int e = 0;
  ssize_t n = pwrite(fd, reinterpret_cast<const void*>(addr), len, 0);
  if (n < 0)
    e = errno;
  else if (static_cast<uint64_t>(n) != len)
    e = EIO;
  else if (pread(fd, out, len, 0) != static_cast<ssize_t>(len))
    e = EIO;
  close(fd);
  return e;
}

}  // namespace ras::testing
