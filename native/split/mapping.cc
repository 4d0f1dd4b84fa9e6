#include "split/mapping.h"

#include <errno.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstring>

#include "linux_compat.h"
#include "split/props.h"
#include "split/swap_uffd.h"
#include "split/uffd.h"
#include "testing/swap_hold.h"
#include "state/state.h"
#include "simulate/simulate.h"

namespace ras::mapping {

namespace {
// Guard markers (MADV_GUARD_INSTALL, Linux >= 6.13): probed once on an unlocked scratch mapping, so
// that an EINVAL from a locked block (the kernel refuses markers on VM_LOCKED) is not taken for an
// old kernel. -1: not probed yet; tests may force it off (UseGuardMarkers).
std::atomic<int> g_guard_markers{-1};
std::atomic<bool> g_guard_forced_off{false};

bool GuardMarkersWork() {
  int v = g_guard_markers.load();
  if (v < 0) {
    void* p = mmap(nullptr, kSubpage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    v = 0;
    if (p != MAP_FAILED) {
      munlock(p, kSubpage);  // mlockall(MCL_FUTURE) locked it
      v = madvise(p, kSubpage, MADV_GUARD_INSTALL) == 0 ? 1 : 0;
      munmap(p, kSubpage);
    }
    g_guard_markers.store(v);
  }
  return v == 1 && !g_guard_forced_off.load();
}

// Guard one run of subpages without splitting the VMA, where the kernel can. A locked block
// (mlockall(MCL_FUTURE) made it so) is unlocked first; SwapIn locks it again before it goes in.
bool InstallGuard(char* addr, uint64_t len, char* block, uint64_t block_size) {
  if (!GuardMarkersWork()) return false;
  if (madvise(addr, len, MADV_GUARD_INSTALL) == 0) return true;
  if (errno != EINVAL || !block || munlock(block, block_size) != 0) return false;
  return madvise(addr, len, MADV_GUARD_INSTALL) == 0;
}

}  // namespace

void* MapShared(int fd, uint64_t size, uint64_t offset, Failure* fail) {
  void* p = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, static_cast<off_t>(offset));
  if (p == MAP_FAILED) {
    *fail = {errno, "mmap"};
    return nullptr;
  }
  return p;
}

void Unmap(void* addr, uint64_t size) { munmap(addr, size); }

void UseGuardMarkers(bool on) { g_guard_forced_off.store(!on); }

bool SwapIn(Block& b, uintptr_t target, const std::vector<uint32_t>& lost, bool lost_already_poisoned,
            props::Lock lock, Failure* fail) {
  simulate::Settle();  // a simulated poison that found the page Normal has made its mprotect by now
  // Best case: the block is complete off to the side (lost subpages hwpoisoned or behind guard
  // markers, one VMA), so a single mremap replaces the huge page atomically.
  bool complete = lost_already_poisoned || lost.empty();
  if (!complete) {
    complete = true;
    for (size_t i = 0; i < lost.size() && complete; i++) {
      size_t j = i;
      while (j + 1 < lost.size() && lost[j + 1] == lost[j] + 1) j++;
      complete = InstallGuard(b.addr + static_cast<uint64_t>(lost[i]) * kSubpage, (lost[j] - lost[i] + 1) * kSubpage,
                              b.addr, b.size);
      i = j;
    }
  }
  // Locked where the region is (after the markers: the kernel refuses them on locked memory); where
  // RLIMIT_MEMLOCK has no room for it next to the huge page, once more in place after the swap.
  int lock_err = lock != props::kUnlocked ? props::LockReplacement(b.addr, b.size) : 0;
  auto lock_after = [&](uintptr_t at) {
    if (lock_err && props::LockReplacement(reinterpret_cast<char*>(at), b.size) != 0) props::CountLockFailure(lock_err);
  };
  if (complete) {
    void* moved = mremap(b.addr, b.size, b.size, MREMAP_MAYMOVE | MREMAP_FIXED, reinterpret_cast<void*>(target));
    if (moved == MAP_FAILED) {
      *fail = {errno, "mremap"};
      return false;
    }
    b.addr = nullptr;
    lock_after(target);
    return true;
  }
  // Kernels without guard markers: PROT_NONE would split the VMA and mremap moves one VMA only. With
  // a userfaultfd the block goes in read-write, its lost subpages missing and registered, and they
  // are guarded in place (split/swap_uffd.h): healthy memory is never inaccessible, to KVM neither.
  int e = 0;
  const char* sc = nullptr;
  switch (swapfd::MoveIn(b.addr, b.size, target, lost, &e, &sc)) {
    case swapfd::kMoved:
      b.addr = nullptr;
      lock_after(target);
      return true;
    case swapfd::kGuardFailed:
      b.addr = nullptr;  // in place, all PROT_NONE: the caller reports the page lost
      *fail = {e, sc};
      return false;
    case swapfd::kMoveFailed:
      *fail = {e, sc};
      return false;
    case swapfd::kUnavailable:
      break;
  }
  // No userfaultfd: the block goes in PROT_NONE (a thread touching it meanwhile faults and waits
  // for the engine; KVM's access for a vCPU fails with EFAULT until the healthy runs are open).
  if (mprotect(b.addr, b.size, PROT_NONE) != 0) {
    *fail = {errno, "mprotect"};
    return false;
  }
  void* moved = mremap(b.addr, b.size, b.size, MREMAP_MAYMOVE | MREMAP_FIXED, reinterpret_cast<void*>(target));
  if (moved == MAP_FAILED) {
    *fail = {errno, "mremap"};
    mprotect(b.addr, b.size, PROT_READ | PROT_WRITE);
    return false;
  }
  b.addr = nullptr;  // it lives at target now
  testing::AtSwapWindow();  // tests only: testing/swap_hold.h
  lock_after(target);
  char* base = reinterpret_cast<char*>(target);
  uint64_t subpages = b.size / kSubpage;
  // `lost` is sorted: open every healthy run between lost subpages.
  uint64_t run = 0;
  for (size_t i = 0; i <= lost.size(); i++) {
    uint64_t end = i < lost.size() ? lost[i] : subpages;
    if (end > run && mprotect(base + run * kSubpage, (end - run) * kSubpage, PROT_READ | PROT_WRITE) != 0) {
      // Each hole costs map entries (vm.max_map_count): the block is in place but only partly
      // open. Close it all again, so that what the failure reports (the whole huge page lost) is
      // what a thread finds; one protection over whole VMAs merges them and needs no new entry.
      *fail = {errno, "mprotect"};
      mprotect(base, b.size, PROT_NONE);
      return false;
    }
    run = end + 1;
  }
  return true;
}

int GuardSubpage(uintptr_t addr, int wanted, Failure* fail) {
  char* p = reinterpret_cast<char*>(addr & ~(kSubpage - 1));
  if (wanted == HUGETLB_RAS_GUARD_UFFD) {
    const char* sc = nullptr;
    int e = uffd::PoisonRange(p, kSubpage, true, &sc);
    if (e == 0) return HUGETLB_RAS_GUARD_UFFD;
    *fail = {e, sc};
    if (mprotect(p, kSubpage, PROT_NONE) != 0) return -1;  // PoisonRange's own mprotect, checked
    return HUGETLB_RAS_GUARD_FAULT;
  }
  if (wanted == HUGETLB_RAS_GUARD_HWPOISON && madvise(p, kSubpage, MADV_HWPOISON) == 0) return HUGETLB_RAS_GUARD_HWPOISON;
  if (InstallGuard(p, kSubpage, nullptr, 0)) return HUGETLB_RAS_GUARD_FAULT;
  if (mprotect(p, kSubpage, PROT_NONE) != 0) {
    *fail = {errno, "mprotect"};
    return -1;
  }
  return HUGETLB_RAS_GUARD_FAULT;
}

bool MapFreshHugePage(const Region& r, uint64_t file_off, uintptr_t target, const numa::Policy& pol, Failure* fail) {
  int fd = r.fd;
  uint64_t size = r.huge_size;
  // Map the new huge page off to the side first (the reservation fails here if the pool is empty,
  // and the split memory at `target` keeps working), give it the region's policy, then fault it in.
  void* fresh = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, static_cast<off_t>(file_off));
  if (fresh == MAP_FAILED) {
    *fail = {errno, "mmap"};
    return false;
  }
  numa::PlaceLike(static_cast<char*>(fresh), size, pol, -1, false);
  props::MarkLikeRegion(r, static_cast<char*>(fresh), size);
  if (madvise(fresh, size, MADV_POPULATE_WRITE) != 0 && errno != EINVAL) {
    *fail = {errno, "madvise(MADV_POPULATE_WRITE)"};
    munmap(fresh, size);
    return false;
  }
  void* moved = mremap(fresh, size, size, MREMAP_MAYMOVE | MREMAP_FIXED, reinterpret_cast<void*>(target));
  if (moved != MAP_FAILED) return true;
  // Kernels without hugetlb mremap: the page is reserved and allocated, so MAP_FIXED cannot fail
  // for want of one.
  munmap(fresh, size);
  void* fixed = mmap(reinterpret_cast<void*>(target), size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd,
                     static_cast<off_t>(file_off));
  if (fixed == MAP_FAILED) {
    *fail = {errno, "mmap"};
    return false;
  }
  numa::PlaceLike(static_cast<char*>(fixed), size, pol, -1, false);
  props::MarkLikeRegion(r, static_cast<char*>(fixed), size);
  return true;
}

bool MapFreshAnonymous(const Region& r, uintptr_t target, uint64_t size, const numa::Policy& pol, Failure* fail) {
  void* p = mmap(reinterpret_cast<void*>(target), size, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
  if (p == MAP_FAILED) {
    *fail = {errno, "mmap"};
    return false;
  }
  madvise(p, size, MADV_HUGEPAGE);
  madvise(p, size, MADV_DONTFORK);  // guest RAM: never copied into a child the VMM forks
  props::MarkLikeRegion(r, static_cast<char*>(p), size);
  numa::PlaceLike(static_cast<char*>(p), size, pol, -1, false);
  if (props::Wanted(r) != props::kUnlocked) {
    int e = props::LockReplacement(static_cast<char*>(p), size);
    if (e) props::CountLockFailure(e);
  }
  return true;
}

double HugeMappedShare(uintptr_t addr, uint64_t len) {
  FILE* f = fopen("/proc/self/smaps", "re");
  if (!f) return -1;
  char line[512];
  uintptr_t vs = 0, ve = 0;
  uint64_t huge_kb = 0;
  bool in = false;
  while (fgets(line, sizeof line, f)) {
    unsigned long a, b;
    if (sscanf(line, "%lx-%lx ", &a, &b) == 2 && strchr(line, '-') < strchr(line, ' ')) {
      vs = a;
      ve = b;
      in = vs < addr + len && ve > addr;
      continue;
    }
    unsigned long kb;
    if (in && sscanf(line, "AnonHugePages: %lu kB", &kb) == 1) {
      // Only count VMAs fully inside the range: a VMA straddling it would overcount.
      if (vs >= addr && ve <= addr + len) huge_kb += kb;
    }
  }
  fclose(f);
  return static_cast<double>(huge_kb * 1024) / static_cast<double>(len);
}

}  // namespace ras::mapping
