// The region table: each guest RAM region the engine maps, with its per huge page state words and
// lost-subpage bitmap. Fixed-size and lock-free so a signal handler may read and update it.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <vector>

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

// What mapRegion knows of a registration, to build its descriptor from.
struct RegionSpec {
  uint32_t id = 0;
  uintptr_t start = 0;
  uint64_t size = 0;
  uint64_t huge_size = 0;
  int fd = -1;
  uint64_t dev = 0, ino = 0;
  uint64_t file_offset = 0;
  uint64_t guest_phys = 0;
  uint32_t refuse_reason = kEligible;
  int guard = HUGETLB_RAS_GUARD_FAULT;
};

// One registration's descriptor. Allocated once by mapRegion, published in a slot of the table,
// and never changed after publication: the plain fields are const, the state is atomics in (or
// pointed to by) it. Freed only after it was unpublished and no thread holds it (RegionRef), so a
// thread that found it keeps a consistent region for as long as it holds it, whatever happens to
// the slot meanwhile.
struct Region {
  explicit Region(const RegionSpec& s);
  ~Region();
  Region(const Region&) = delete;
  Region& operator=(const Region&) = delete;

  const uint32_t id;  // unique per registration, so a late report never hits a reused slot
  const uintptr_t start;
  const uintptr_t end;
  const uint64_t huge_size;
  const uint32_t huge_shift;
  const int fd;
  const uint64_t dev;  // identity of the backing file (the simulation keys poisoned file pages on it)
  const uint64_t ino;
  const uint64_t file_offset;
  const uint32_t pages;                // number of huge pages
  const uint32_t subpages_per_page;    // 4 KiB subpages in one huge page (any number, not only 64s)
  const uint32_t lost_words_per_page;  // 64-bit words of lost-subpage bitmap per huge page
  const uint64_t guest_phys;           // guest-physical address of `start` (for the C API's GPA queries)
  // Both arrays are demand-zero anonymous mappings: memory is committed only where a word was
  // written (a page state that changed, a page that lost a subpage). A region of 1 TiB with nothing
  // lost holds a few pages of them, not 32 MiB. page_words are 0 (kNormal) until written.
  std::atomic<uint32_t>* const page_words;  // see state/page_state.h; changed only there
  // Page `p`'s bitmap is words [p * lost_words_per_page, (p + 1) * lost_words_per_page); bit `s` of
  // it is subpage s of that page. Read only where has_lost says the page may have bits (so a read
  // never maps memory for pages that lost nothing).
  std::atomic<uint64_t>* const lost_bits;
  // One bit per chunk of a page's bitmap (kChunkWords words, one 4 KiB page of it; a page's bitmap
  // is chunks_per_page chunks, the last maybe short): the chunk may hold set bits. Set before the
  // first bit, never cleared (ClearPageLost clears the bits), so a reader that finds it clear knows
  // those subpages are not lost without reading (so without mapping) the chunk.
  static constexpr uint32_t kChunkWords = 512;
  const uint32_t chunks_per_page;
  std::atomic<uint64_t>* const has_lost;
  std::atomic<uint32_t> refuse_reason;
  // How lost subpages are kept inaccessible: enum hugetlb_ras_guard (include/hugetlb_ras.h). A
  // subpage whose preferred guard failed falls back to a fault guard, and `guard` then says so:
  // it is the weakest guard in use in this region.
  std::atomic<int> guard;
  // Set by a signal handler that marked a page Pending but found the report queue full: the lanes
  // look for Pending pages here (see g_attention in state/reports.h).
  std::atomic<uint32_t> attention{0};
  // Set when removal starts: whoever waits on one of its pages stops waiting and lets go.
  std::atomic<int> removed{0};

  bool ok() const { return page_words && lost_bits; }  // false: out of memory, do not publish
  bool Contains(uintptr_t a) const { return a >= start && a < end; }
  uint32_t PageIndex(uintptr_t a) const { return static_cast<uint32_t>((a - start) >> huge_shift); }
  uintptr_t PageAddress(uint32_t i) const { return start + (static_cast<uintptr_t>(i) << huge_shift); }
  std::atomic<uint32_t>& Word(uint32_t i) { return page_words[i]; }
  bool SubpageLost(uintptr_t a) const;
  bool MarkSubpageLost(uintptr_t a);  // true: it was not marked before
  std::vector<uint32_t> LostSubpagesOf(uint32_t page) const;  // subpage indices in the page, sorted
  void ClearPageLost(uint32_t page);  // every lost bit of one huge page
  // Every lost subpage, by region offset in ascending order; O(chunks / 64 + chunks that lost some).
  template <typename Fn>
  void ForEachLost(Fn fn) const {
    uint64_t chunks = static_cast<uint64_t>(pages) * chunks_per_page;
    for (uint64_t w = 0; w < (chunks + 63) / 64; w++)
      for (uint64_t m = has_lost[w].load(std::memory_order_acquire); m; m &= m - 1) {
        uint64_t c = w * 64 + static_cast<uint64_t>(__builtin_ctzll(m));
        uint32_t page = static_cast<uint32_t>(c / chunks_per_page);
        uint32_t first = static_cast<uint32_t>(c % chunks_per_page) * kChunkWords;
        uint32_t last = first + kChunkWords < lost_words_per_page ? first + kChunkWords : lost_words_per_page;
        const std::atomic<uint64_t>* words = lost_bits + static_cast<size_t>(page) * lost_words_per_page;
        for (uint32_t i = first; i < last; i++)
          for (uint64_t bits = words[i].load(std::memory_order_acquire); bits; bits &= bits - 1)
            fn((static_cast<uint64_t>(page) << huge_shift) + (i * 64ull + static_cast<uint64_t>(__builtin_ctzll(bits))) * kSubpage);
      }
  }
  // Memory this descriptor holds: the descriptor, the has_lost bits and the pages of the two
  // demand-zero arrays that were written (resident and its own), not their virtual size.
  uint64_t BookkeepingBytes() const;
};

// A hold on a published region: while it is held, removal waits (and the descriptor stays). Each
// slot counts the threads inside the handlers, lanes or C API that look at it or hold it; a thread
// counts itself first, then reads the slot, so removal, which unpublishes first and then waits for
// the count to drop to zero, can never free a descriptor somebody still reads. Async-signal-safe
// (atomics only). A signal handler must Release() before it siglongjmps or chains.
class RegionRef {
 public:
  RegionRef() = default;
  ~RegionRef() { Release(); }
  RegionRef(RegionRef&& o) noexcept : slot_(o.slot_), r_(o.r_) { o.r_ = nullptr; }
  RegionRef(const RegionRef&) = delete;
  RegionRef& operator=(const RegionRef&) = delete;

  static RegionRef Find(uintptr_t addr);                  // the region holding host address `addr`
  static RegionRef FindGpa(uint64_t gpa);                 // ... guest-physical address `gpa`
  static RegionRef AtSlot(uint32_t slot);                 // whatever is published there
  static RegionRef AtSlot(uint32_t slot, uint32_t id);    // only registration `id`
  void Release();

  explicit operator bool() const { return r_ != nullptr; }
  Region* get() const { return r_; }
  Region& operator*() const { return *r_; }
  Region* operator->() const { return r_; }
  uint32_t slot() const { return slot_; }

 private:
  template <typename Match>
  static RegionRef Scan(Match match);
  static RegionRef Try(uint32_t slot, uint32_t id, bool any_id);
  uint32_t slot_ = 0;
  Region* r_ = nullptr;
};

// JS thread only (the only thread that publishes and removes regions):
int PublishRegion(Region* r);     // the slot, or -1 when all are taken
int FreeRegionSlots();
Region* RegionAt(int slot);       // the published region, or null
Region* FindRegionById(uint32_t id);  // a published region, or null
// Unpublish, mark removed, wake its waiters and wait until no thread holds it. The caller then owns
// the descriptor (unmap, close, delete).
Region* RetireRegion(int slot);

}  // namespace ras
