// Handover (live update): write a split huge page's current data back into its hugetlbfs file, so
// a successor process that maps the file sees the guest's memory as it is now, not as it was at
// the poison. The page stays split here (the caller's page state does not change): the old process
// keeps running on its private replacement memory.
#pragma once

#include <cstdint>
#include <vector>

#include "state/state.h"

namespace ras::handover {

struct Outcome {
  bool ok = false;
  // Why it failed: "ERR_NO_HUGE_PAGE" (the pool has no free huge page: nothing was changed) or
  // "ERR_HANDOVER_FAILED" (a syscall failed, or a fault during the copy; `punched` says whether
  // the file's page was already punched out: then the file holds a hole there).
  const char* code = nullptr;
  int err = 0;
  const char* syscall = nullptr;
  bool punched = false;
  uint64_t bytes = 0;           // healthy bytes copied into the fresh huge page
  std::vector<uint32_t> lost;   // subpages left zero (lost), sorted
  uintptr_t fault_addr = 0;     // a fault during the copy: where
};

// The caller checked that page `page` of `r` is Split and the region is eligible. Steps:
// 1. make sure the pool has a free huge page of the region's size (an anonymous MAP_HUGETLB
//    page, faulted in and released again): else ERR_NO_HUGE_PAGE and nothing is touched;
// 2. punch the (poisoned) huge page out of the file (fallocate PUNCH_HOLE|KEEP_SIZE);
// 3. map the file offset MAP_SHARED|MAP_POPULATE off to the side: a fresh huge page;
// 4. copy every healthy 4 KiB run from the live replacement memory at the region's address into
//    it (guarded: a new memory error fails the page instead of the process); lost subpages stay
//    zero; 5. unmap the temporary mapping.
Outcome WriteBack(Region& r, uint32_t page);

// Tests: the pool check answers "no free huge page" (ENOMEM), without emptying the machine's pool
// under every other test that runs meanwhile.
void TestPoolEmpty(bool on);
// Tests: the copy fails (EIO, "memcpy") once `bytes` have been copied into the punched file page: a
// handover that failed half way. 0: off.
void TestFailCopyAfter(uint64_t bytes);

}  // namespace ras::handover
