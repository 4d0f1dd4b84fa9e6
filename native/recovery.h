// Splitting one poisoned huge page: read it back around the poisoned subpages into replacement
// memory, guard the lost subpages, and swap the replacement in place in one step.
#pragma once

#include <cstdint>
#include <vector>

#include "registry.h"

namespace ras::recovery {

struct Outcome {
  bool ok = false;
  RefuseReason refuse = kEligible;  // why it failed, when it failed
  int err = 0;
  const char* syscall = nullptr;
  uint64_t bytes = 0;
  uint32_t reads = 0;
  bool used_reserve = false;
  bool hwpoisoned = false;  // lost subpages are really poisoned (else PROT_NONE)
  std::vector<uint32_t> lost;  // subpage indices within the huge page, sorted
  uint64_t ns = 0;
};

// The caller owns the page (state kRecovering). `known_lost`: subpages to treat as lost even if
// they read back (a journal from before a restart says so).
Outcome SplitHugePage(Region& r, uint32_t page, const std::vector<uint32_t>& known_lost);

// A subpage of a split huge page reported after the split: is it lost? (EIO from the file.)
bool SubpageUnreadable(Region& r, uintptr_t addr);

// How many threads read a huge page back (2 MiB pages use one; 1 GiB pages use this many).
void SetReadThreads(int n);

}  // namespace ras::recovery
