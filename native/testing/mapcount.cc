#include "testing/mapcount.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdlib>

namespace ras::mapcount {

namespace {
char* g_area = nullptr;
uint64_t g_area_len = 0;
constexpr uint64_t kPage = 4096;

uint64_t MaxMapCount() {
  int fd = open("/proc/sys/vm/max_map_count", O_RDONLY | O_CLOEXEC);
  char buf[32] = {};
  if (fd < 0) return 65530;
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  return n > 0 ? strtoull(buf, nullptr, 10) : 65530;
}
}  // namespace

int64_t Fill(uint32_t spare) {
  Release();
  uint64_t pages = 2 * MaxMapCount() + 4;
  g_area_len = pages * kPage;
  void* p = mmap(nullptr, g_area_len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) return -1;
  g_area = static_cast<char*>(p);
  // Every other page readable: each one splits the area's VMA, two entries at a time.
  uint64_t opened = 0;
  for (uint64_t i = 1; 2 * i + 1 < pages; i++, opened++)
    if (mprotect(g_area + 2 * i * kPage, kPage, PROT_READ) != 0) break;
  // Close again the last ones until `spare` entries are free (two per page closed; the last split
  // that failed may have left one free entry, so the count is at least `spare`).
  uint64_t give_back = (spare + 1) / 2;
  for (uint64_t k = 0; k < give_back && opened > 0; k++, opened--)
    mprotect(g_area + 2 * opened * kPage, kPage, PROT_NONE);
  return static_cast<int64_t>(2 * opened);
}

void Release() {
  if (g_area) munmap(g_area, g_area_len);
  g_area = nullptr;
  g_area_len = 0;
}

}  // namespace ras::mapcount
