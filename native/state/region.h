// The region table: each guest RAM region the engine maps, with its per huge page state words and
// lost-subpage bitmap. Fixed-size and lock-free so a signal handler may read and update it.
#pragma once

#include <atomic>
#include <cstdint>

#include "hugetlb_ras.h"

namespace ras {

constexpr int kMaxRegions = 64;
constexpr uint64_t kSubpage = 4096;
constexpr int kSubpageShift = 12;

// Why the armed policy refuses a region's poisons. The TypeScript policy decides it (mapRegion
// arms it before the region goes live), from the numbers the addon exports as constants.refuseReason; the last
// two are also what a recovery that failed reports.
enum RefuseReason : uint32_t {
  kEligible = 0,
  kSharedMapping = 1,
  kVhostUser = 2,
  kIvshmem = 3,
  kVfio = 4,
  kKernelNoReadAround = 5,
  kReadBackFailed = 6,  // recovery failed: the huge page could not be read back
  kNoMemory = 7,        // recovery failed: no replacement memory
};

struct Region {
  std::atomic<int> live{0};  // 0 free, 1 live, 2 being removed
  std::atomic<int> busy{0};  // recovery lanes working on this region (removal waits for 0)
  uint32_t id = 0;           // unique per registration, so a late report never hits a reused slot
  uintptr_t start = 0;
  uintptr_t end = 0;
  uint64_t huge_size = 0;
  uint32_t huge_shift = 0;
  int fd = -1;
  uint64_t dev = 0;  // identity of the backing file (the simulation keys poisoned file pages on it)
  uint64_t ino = 0;
  uint64_t file_offset = 0;
  uint32_t pages = 0;                   // number of huge pages
  uint32_t lost_words_per_page = 0;     // 64-bit words of lost-subpage bitmap per huge page
  std::atomic<uint32_t>* page_words = nullptr;  // see state/page_state.h; changed only there
  std::atomic<uint64_t>* lost_bits = nullptr;
  std::atomic<uint32_t> refuse_reason{kEligible};
  // How lost subpages are kept inaccessible: enum hugetlb_ras_guard (include/hugetlb_ras.h). A
  // subpage whose preferred guard failed falls back to a fault guard, and `guard` then says so:
  // it is the weakest guard in use in this region.
  std::atomic<int> guard{HUGETLB_RAS_GUARD_FAULT};
  uint64_t guest_phys = 0;  // guest-physical address of `start` (for the C API's GPA queries)

  bool Contains(uintptr_t a) const { return a >= start && a < end; }
  uint32_t PageIndex(uintptr_t a) const { return static_cast<uint32_t>((a - start) >> huge_shift); }
  uintptr_t PageAddress(uint32_t i) const { return start + (static_cast<uintptr_t>(i) << huge_shift); }
  std::atomic<uint32_t>& Word(uint32_t i) { return page_words[i]; }
  bool SubpageLost(uintptr_t a) const;
  void MarkSubpageLost(uintptr_t a);
};

Region* Regions();  // array of kMaxRegions
Region* FindRegion(uintptr_t addr, int* slot_out);  // async-signal-safe
Region* FindRegionById(uint32_t id);  // a live region, or null

}  // namespace ras
