#include "testing/bookkeeping.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <memory>

#include "state/region.h"

namespace ras::bookkeeping {

namespace {

int64_t RssBytes() {
  int fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  char buf[128] = {};
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0) return 0;
  long long pages = 0, resident = 0;
  if (sscanf(buf, "%lld %lld", &pages, &resident) != 2) return 0;
  return resident * sysconf(_SC_PAGESIZE);
}

}  // namespace

Result Run(uint64_t size, uint64_t huge_size, const std::vector<uint64_t>& marks, const std::vector<uint32_t>& clear_pages) {
  Result res;
  int64_t before = RssBytes();
  RegionSpec spec;
  spec.start = 0;
  spec.size = size;
  spec.huge_size = huge_size;
  std::unique_ptr<Region> r(new Region(spec));
  if (!r->ok()) return res;
  for (uint64_t m : marks) res.newly_marked += r->MarkSubpageLost(static_cast<uintptr_t>(m));
  for (uint32_t p : clear_pages) r->ClearPageLost(p);
  for (uint64_t m : marks) res.per_page.push_back(static_cast<uint32_t>(r->LostSubpagesOf(r->PageIndex(m)).size()));
  r->ForEachLost([&](uint64_t off) { res.lost.push_back(off); });
  res.bookkeeping_bytes = r->BookkeepingBytes();
  res.rss_delta = RssBytes() - before;
  return res;
}

}  // namespace ras::bookkeeping
