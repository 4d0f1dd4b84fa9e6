// The properties of guest memory that its replacement keeps (issue 19, defects 2 and 18): the lock,
// MADV_DONTDUMP, the NUMA policy (numa.h) and MADV_DONTFORK (reserve.h), and what cannot carry.
//
// The lock. The kernel keeps no trace of mlock() on a hugetlb VMA (mlock_fixup skips hugetlb: its
// VmFlags never show `lo`; only MAP_POPULATE's effect is left), so the engine cannot read it back:
// the VMM declares it (Region.lockMemory, which does the mlock too). A process that locks new
// memory (mlockall MCL_FUTURE, with or without MCL_ONFAULT) is seen by a probe: a 4 KiB scratch
// mapping that msync(MS_INVALIDATE) answers EBUSY is VM_LOCKED. Either way the replacement is
// locked before it goes in (mlock2 MLOCK_ONFAULT: it is populated already, and markers in it would
// fail a populating mlock); where RLIMIT_MEMLOCK refuses, once more after the swap (the huge page's
// share is free then), and a refusal is counted for stats().
//
// MADV_DONTDUMP and a userfaultfd registration the VMM made itself show only in
// /proc/self/smaps (~1 ms to read: never on the stall path). A thread of this module reads it after
// each recovery starts and ends, keeps per region what its huge pages' VMAs carry, marks the
// region's replacement VMAs MADV_DONTDUMP where the region is, and counts registrations that
// cannot carry. A recovery marks its block from what is known before it goes in.
#pragma once

#include <cstdint>

#include "state/state.h"

namespace ras::props {

enum Lock : int { kUnlocked = 0, kLocked = 1, kLockedOnFault = 2 };

// The process locks new mappings (mlockall(MCL_FUTURE)): kLocked, or kLockedOnFault with MCL_ONFAULT.
Lock FutureLock();
// The VMM's declaration for a region (Region.lockMemory); forgotten with Forget.
void SetRegionLock(const Region& r, Lock l);
Lock RegionLock(uint32_t region_id);
void Forget(uint32_t region_id);
// The lock a replacement in `r` gets: the region's declaration, else the process's MCL_FUTURE.
Lock Wanted(const Region& r);

// Lock [addr, addr+len) (a replacement, populated). 0 or an errno; a final refusal is counted.
int LockReplacement(char* addr, uint64_t len);
void CountLockFailure(int e);
// The range is VM_LOCKED (msync MS_INVALIDATE answers EBUSY).
bool IsLocked(const void* addr, uint64_t len);

// MADV_DONTNEED, or MADV_DONTNEED_LOCKED (Linux >= 5.18) where the range is locked. 0 or an errno.
int Drop(void* addr, uint64_t len);

// MADV_DONTDUMP for a replacement of `r` where the region's huge pages have it (as known now).
// False: nothing is known of the region yet (the replacement is marked after the fact, Note(r, true)).
bool MarkLikeRegion(const Region& r, char* addr, uint64_t len);
// When a recovery in `r` starts (force false: only where nothing was read in the last second) or a
// replacement went in unmarked (force): read the region's VMAs again, off this thread.
void Note(const Region& r, bool force);
// The thread that reads smaps: from lazy::Start / lazy::Stop (the lanes' start and stop).
void Start();
void Stop();

// The guard the region was mapped with (its `guard` field when first asked): later splits use it
// again after one fell back to a fault guard (a transient ENOMEM), while Region::guard keeps saying
// the weakest in use (the C API reports that).
int ChosenGuard(const Region& r);

struct Counters {
  uint64_t locked_eager = 0;       // recoveries sent the eager way because the memory is locked
  uint64_t lock_failures = 0;      // replacements that could not be locked (RLIMIT_MEMLOCK)
  int lock_errno = 0;              // the last such failure
  uint64_t dontdump_marked = 0;    // replacement VMAs marked MADV_DONTDUMP after the fact
  uint64_t foreign_uffd = 0;       // regions where the VMM's own userfaultfd registration was seen
};
Counters GetCounters();
void CountLockedEager();

}  // namespace ras::props
