// Test-only: a region descriptor with no memory behind it, to exercise the lost-subpage bookkeeping
// alone (any huge page size, any region size: 1 TiB costs nothing to describe) and measure what it
// holds. Never published: no handler or lane sees it.
#pragma once

#include <cstdint>
#include <vector>

namespace ras::bookkeeping {

struct Result {
  std::vector<uint64_t> lost;        // region offsets of the lost subpages (ForEachLost), ascending
  std::vector<uint32_t> per_page;    // LostSubpagesOf(page) sizes, for the pages of `marks`, in order
  uint64_t newly_marked = 0;         // marks that were new
  uint64_t bookkeeping_bytes = 0;    // Region::BookkeepingBytes() after the marks and clears
  int64_t rss_delta = 0;             // process RSS after minus before (construction, marks, clears)
};

// Describe a region of `size` bytes of `huge_size` pages, mark the subpages at `marks` (offsets),
// then clear the lost bits of `clear_pages`.
Result Run(uint64_t size, uint64_t huge_size, const std::vector<uint64_t>& marks, const std::vector<uint32_t>& clear_pages);

}  // namespace ras::bookkeeping
