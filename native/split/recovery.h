// Splitting one poisoned huge page: read it back around the poisoned subpages into replacement
// memory, guard the lost subpages, and swap the replacement in place in one step.
#pragma once

#include <cstdint>
#include <vector>

#include "state/state.h"

namespace ras::recovery {

// Which way a recovery went: eager (read all, then one swap) or lazy (in place at once, filled on
// demand: split/lazy.h).
enum Path : int { kPathEager = 1, kPathLazy = 2 };

struct Outcome {
  int path = kPathEager;
  bool ok = false;
  RefuseReason refuse = kEligible;  // why it failed, when it failed
  int err = 0;
  const char* syscall = nullptr;
  uint64_t bytes = 0;
  uint32_t reads = 0;
  bool used_reserve = false;
  int guard = HUGETLB_RAS_GUARD_NONE;  // how the lost subpages were kept out (enum hugetlb_ras_guard)
  int guard_errno = 0;      // why the region's preferred guard failed (it fell back to a fault guard)
  const char* guard_syscall = nullptr;
  std::vector<uint32_t> lost;  // subpage indices within the huge page, sorted
  uint64_t ns = 0;
};

struct ReaderPool;

// Persistent helper threads that read a huge page back together with the calling thread (one copy
// stream does not saturate memory). Each recovery lane owns one; started once, woken by a futex.
class Readers {
 public:
  ~Readers();
  void Start(int priority);  // SetReadThreads() - 1 helpers; priority > 0: SCHED_FIFO, else a nice value
  void Stop();
  ReaderPool* pool_ = nullptr;
};

// The caller owns the page (state kRecovering). `known_lost`: subpages to treat as lost even if
// they read back (a journal from before a restart says so). `readers` may be null (one thread).
// `never_hwpoison`: the subpages are healthy memory made lost on purpose (a migration's imported
// frames): a region that guards with MADV_HWPOISON gets the fault guard for them instead, since
// poisoning would retire a healthy physical page.
Outcome SplitHugePage(Region& r, uint32_t page, const std::vector<uint32_t>& known_lost, Readers* readers,
                      bool never_hwpoison = false);

// How many threads read a huge page back (the lane's thread plus helpers; default 2). Takes
// effect for lanes started afterwards.
void SetReadThreads(int n);
int ReadThreads();

}  // namespace ras::recovery
