#include "state/region.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>

#include "state/sys.h"

namespace ras {

namespace {
std::atomic<Region*> g_slots[kMaxRegions];
std::atomic<int> g_users[kMaxRegions];  // threads looking at or holding each slot
}  // namespace

namespace {

size_t PageRound(size_t bytes) {
  size_t pg = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  return (bytes + pg - 1) / pg * pg;
}

// Zeroed memory committed only where written; null when the address space cannot be had.
template <typename T>
T* DemandZero(size_t count) {
  if (count == 0) count = 1;
  void* p = mmap(nullptr, PageRound(count * sizeof(T)), PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  return p == MAP_FAILED ? nullptr : static_cast<T*>(p);
}

template <typename T>
void FreeDemandZero(T* p, size_t count) {
  if (count == 0) count = 1;
  if (p) munmap(p, PageRound(count * sizeof(T)));
}

// Bytes of [p, p+bytes) present in memory (/proc/self/pagemap bit 63). Pages of the bitmap are read
// only where has_lost says they were written, so this is what the bookkeeping holds (page_words
// that were only read map the zero page, counted here though it costs nothing).
uint64_t Resident(const void* p, size_t bytes) {
  size_t pg = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  size_t n = PageRound(bytes ? bytes : 1) / pg;
  int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return n * pg;  // cannot tell: count it all
  uint64_t resident = 0;
  uint64_t buf[512];
  for (size_t i = 0; i < n;) {
    size_t k = n - i < 512 ? n - i : 512;
    off_t at = static_cast<off_t>((reinterpret_cast<uintptr_t>(p) / pg + i) * 8);
    ssize_t got = pread(fd, buf, k * 8, at);
    if (got <= 0) {
      resident += (n - i) * pg;
      break;
    }
    for (size_t j = 0; j < static_cast<size_t>(got) / 8; j++) resident += ((buf[j] >> 63) & 1) ? pg : 0;
    i += static_cast<size_t>(got) / 8;
  }
  close(fd);
  return resident;
}

}  // namespace

Region::Region(const RegionSpec& s)
    : id(s.id),
      start(s.start),
      end(s.start + s.size),
      huge_size(s.huge_size),
      huge_shift(static_cast<uint32_t>(__builtin_ctzll(s.huge_size))),
      fd(s.fd),
      dev(s.dev),
      ino(s.ino),
      file_offset(s.file_offset),
      pages(static_cast<uint32_t>(s.size / s.huge_size)),
      subpages_per_page(static_cast<uint32_t>(s.huge_size / kSubpage)),
      lost_words_per_page(static_cast<uint32_t>((s.huge_size / kSubpage + 63) / 64)),
      guest_phys(s.guest_phys),
      page_words(DemandZero<std::atomic<uint32_t>>(pages)),
      lost_bits(DemandZero<std::atomic<uint64_t>>(static_cast<size_t>(pages) * lost_words_per_page)),
      chunks_per_page((lost_words_per_page + kChunkWords - 1) / kChunkWords),
      has_lost(new std::atomic<uint64_t>[(static_cast<uint64_t>(pages) * chunks_per_page + 63) / 64]()),
      refuse_reason(s.refuse_reason),
      guard(s.guard) {}

Region::~Region() {
  FreeDemandZero(page_words, pages);
  FreeDemandZero(lost_bits, static_cast<size_t>(pages) * lost_words_per_page);
  delete[] has_lost;
}

namespace {
bool Bit(const std::atomic<uint64_t>* bits, uint64_t i) { return (bits[i / 64].load(std::memory_order_acquire) >> (i % 64)) & 1; }
}  // namespace

bool Region::SubpageLost(uintptr_t a) const {
  uint32_t page = PageIndex(a);
  uint32_t sub = static_cast<uint32_t>(((a - start) & (huge_size - 1)) >> kSubpageShift);
  if (!Bit(has_lost, static_cast<uint64_t>(page) * chunks_per_page + sub / 64 / kChunkWords)) return false;
  return Bit(lost_bits + static_cast<size_t>(page) * lost_words_per_page, sub);
}

bool Region::MarkSubpageLost(uintptr_t a) {
  uint32_t page = PageIndex(a);
  uint32_t sub = static_cast<uint32_t>(((a - start) & (huge_size - 1)) >> kSubpageShift);
  // The chunk's flag first: a reader that sees the bit has already been able to see the flag.
  uint64_t c = static_cast<uint64_t>(page) * chunks_per_page + sub / 64 / kChunkWords;
  has_lost[c / 64].fetch_or(1ull << (c % 64), std::memory_order_acq_rel);
  size_t w = static_cast<size_t>(page) * lost_words_per_page + sub / 64;
  return !(lost_bits[w].fetch_or(1ull << (sub % 64), std::memory_order_acq_rel) & (1ull << (sub % 64)));
}

std::vector<uint32_t> Region::LostSubpagesOf(uint32_t page) const {
  std::vector<uint32_t> out;
  const std::atomic<uint64_t>* w = lost_bits + static_cast<size_t>(page) * lost_words_per_page;
  for (uint32_t c = 0; c < chunks_per_page; c++) {
    if (!Bit(has_lost, static_cast<uint64_t>(page) * chunks_per_page + c)) continue;
    uint32_t last = (c + 1) * kChunkWords < lost_words_per_page ? (c + 1) * kChunkWords : lost_words_per_page;
    for (uint32_t i = c * kChunkWords; i < last; i++)
      for (uint64_t bits = w[i].load(std::memory_order_acquire); bits; bits &= bits - 1)
        out.push_back(i * 64 + static_cast<uint32_t>(__builtin_ctzll(bits)));
  }
  return out;
}

void Region::ClearPageLost(uint32_t page) {
  std::atomic<uint64_t>* w = lost_bits + static_cast<size_t>(page) * lost_words_per_page;
  for (uint32_t c = 0; c < chunks_per_page; c++) {
    if (!Bit(has_lost, static_cast<uint64_t>(page) * chunks_per_page + c)) continue;
    uint32_t last = (c + 1) * kChunkWords < lost_words_per_page ? (c + 1) * kChunkWords : lost_words_per_page;
    for (uint32_t i = c * kChunkWords; i < last; i++) w[i].store(0, std::memory_order_release);
  }
}

uint64_t Region::BookkeepingBytes() const {
  return sizeof(Region) + (static_cast<uint64_t>(pages) * chunks_per_page + 63) / 64 * 8 + Resident(page_words, static_cast<size_t>(pages) * 4) +
         Resident(lost_bits, static_cast<size_t>(pages) * lost_words_per_page * 8);
}

// Count first, then read the slot (both sequentially consistent): see RegionRef in region.h.
RegionRef RegionRef::Try(uint32_t slot, uint32_t id, bool any_id) {
  RegionRef ref;
  if (slot >= static_cast<uint32_t>(kMaxRegions) || !g_slots[slot].load()) return ref;
  g_users[slot].fetch_add(1);
  Region* r = g_slots[slot].load();
  if (r && !r->removed.load() && (any_id || r->id == id)) {
    ref.slot_ = slot;
    ref.r_ = r;
  } else {
    g_users[slot].fetch_sub(1);
  }
  return ref;
}

template <typename Match>
RegionRef RegionRef::Scan(Match match) {
  for (uint32_t i = 0; i < static_cast<uint32_t>(kMaxRegions); i++) {
    RegionRef ref = Try(i, 0, true);
    if (ref && match(*ref.r_)) return ref;
  }
  return RegionRef();
}

RegionRef RegionRef::Find(uintptr_t addr) {
  return Scan([addr](const Region& r) { return r.Contains(addr); });
}

RegionRef RegionRef::FindGpa(uint64_t gpa) {
  return Scan([gpa](const Region& r) { return gpa >= r.guest_phys && gpa - r.guest_phys < r.end - r.start; });
}

RegionRef RegionRef::AtSlot(uint32_t slot) { return Try(slot, 0, true); }
RegionRef RegionRef::AtSlot(uint32_t slot, uint32_t id) { return Try(slot, id, false); }

void RegionRef::Release() {
  if (!r_) return;
  r_ = nullptr;
  g_users[slot_].fetch_sub(1);
}

int PublishRegion(Region* r) {
  for (int i = 0; i < kMaxRegions; i++) {
    Region* expected = nullptr;
    if (g_slots[i].compare_exchange_strong(expected, r)) return i;
  }
  return -1;
}

int FreeRegionSlots() {
  int n = 0;
  for (int i = 0; i < kMaxRegions; i++) n += g_slots[i].load() == nullptr;
  return n;
}

Region* RegionAt(int slot) { return slot >= 0 && slot < kMaxRegions ? g_slots[slot].load() : nullptr; }

Region* FindRegionById(uint32_t id) {
  for (int i = 0; i < kMaxRegions; i++) {
    Region* r = g_slots[i].load();
    if (r && r->id == id) return r;
  }
  return nullptr;
}

Region* RetireRegion(int slot) {
  Region* r = g_slots[slot].exchange(nullptr);
  if (!r) return nullptr;
  r->removed.store(1);
  // Release every thread waiting on this region (they test `removed`), then wait for all of them,
  // and for any thread that found it a moment ago, to let go.
  for (uint32_t p = 0; p < r->pages; p++) FutexWakeAll(&r->Word(p));
  while (g_users[slot].load() > 0) usleep(100);
  return r;
}

}  // namespace ras
