// Virtual memory: the region's MAP_SHARED mapping, swapping ordinary pages (a Block from
// split/reserve.h) in place of a huge page, guarding lost subpages, and putting a huge page back on
// reset.
#pragma once

#include <cstdint>
#include <vector>

#include "split/numa.h"
#include "split/props.h"
#include "split/reserve.h"

namespace ras::mapping {

void* MapShared(int fd, uint64_t size, uint64_t offset, Failure* fail);
void Unmap(void* addr, uint64_t size);

// Put `b` in place of [target, target+b.size) in one mremap, without any moment where the range is
// unmapped or shows partial data or a lost subpage. `lost` (sorted subpage indices in the block) are
// guarded first (guard markers, Linux >= 6.13) unless `lost_already_poisoned` (MADV_HWPOISON).
// Older kernels: the block goes in read-write with its lost subpages missing and registered with a
// userfaultfd, and they are made PROT_NONE in place (split/swap_uffd.h); without a userfaultfd it goes
// in PROT_NONE and only the healthy runs are opened after the move. If a guard fails (map entries
// exhausted) the whole range is PROT_NONE on return.
// `lock`: the replacement is locked before it goes in (props.h), or right after where RLIMIT_MEMLOCK
// has no room for both.
bool SwapIn(Block& b, uintptr_t target, const std::vector<uint32_t>& lost, bool lost_already_poisoned,
            props::Lock lock, Failure* fail);

// Tests: force the path of kernels without guard markers (before 6.13).
void UseGuardMarkers(bool on);

// Make one 4 KiB page of already-split memory inaccessible (a loss found after the split), with
// `wanted` (enum hugetlb_ras_guard) where it works. Returns the guard used, or -1 (nothing done).
int GuardSubpage(uintptr_t addr, int wanted, Failure* fail);

// Map a fresh huge page of the file at `target` (the caller punched the old one out). Fails,
// leaving the current mapping untouched, if the pool has no page.
// The region's MADV_DONTDUMP and NUMA policy `pol` carry (set before the page is faulted in).
bool MapFreshHugePage(const Region& r, uint64_t file_off, uintptr_t target, const numa::Policy& pol, Failure* fail);

// Fallback when no huge page can be had: fresh zeroed ordinary memory in place, no guards, with the
// region's properties (lock, MADV_DONTDUMP, the NUMA policy `pol`).
bool MapFreshAnonymous(const Region& r, uintptr_t target, uint64_t size, const numa::Policy& pol, Failure* fail);

// Share of [addr, addr+len) mapped with 2 MiB anonymous pages, from /proc/self/smaps.
double HugeMappedShare(uintptr_t addr, uint64_t len);

}  // namespace ras::mapping
