// Internal to split/lazy*.cc: runs of healthy subpages, and range operations page by page.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "split/lazy_job.h"

namespace ras::lazy {

inline bool IsLost(const std::vector<uint32_t>& sorted, uint32_t s) {
  return std::binary_search(sorted.begin(), sorted.end(), s);
}

// Calls f(start, end) for each run of subpages of [lo, hi) not in `lost` (sorted), in bytes.
template <typename F>
bool ForHealthyRuns(const std::vector<uint32_t>& lost, uint64_t lo, uint64_t hi, F f) {
  uint64_t run = lo;
  for (uint64_t a = lo; a <= hi; a += kSubpage) {
    if (a < hi && !IsLost(lost, static_cast<uint32_t>(a / kSubpage))) continue;
    if (a > run && !f(run, a)) return false;
    run = a + kSubpage;
  }
  return true;
}

// op(addr, len) on [a, z) at once; where that fails (a range crossing a VMA boundary: something
// changed the protection of one 4 KiB inside, as the kernel does when it takes a page away), page
// by page. A page op still refuses is lost: never a hole that reads as zeros or stale data.
template <typename Op>
void PerPage(Job& j, uint64_t a, uint64_t z, const char* what, Op op) {
  if (op(a, z - a) == 0) return;
  for (uint64_t x = a; x < z; x += kSubpage) {
    int e = op(x, kSubpage);
    if (e == 0) continue;
    Fail(j, e, what);
    MarkLost(j, x);
  }
}

}  // namespace ras::lazy
