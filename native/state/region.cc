#include "state/region.h"

#include <unistd.h>

#include <cstddef>

#include "state/sys.h"

namespace ras {

namespace {
std::atomic<Region*> g_slots[kMaxRegions];
std::atomic<int> g_users[kMaxRegions];  // threads looking at or holding each slot
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
      lost_words_per_page(static_cast<uint32_t>((s.huge_size / kSubpage + 63) / 64)),
      guest_phys(s.guest_phys),
      page_words(new std::atomic<uint32_t>[pages]()),
      lost_bits(new std::atomic<uint64_t>[static_cast<size_t>(pages) * lost_words_per_page]()),
      refuse_reason(s.refuse_reason),
      guard(s.guard) {}

Region::~Region() {
  delete[] page_words;
  delete[] lost_bits;
}

bool Region::SubpageLost(uintptr_t a) const {
  uint64_t sub = (a - start) >> kSubpageShift;
  return (lost_bits[sub / 64].load(std::memory_order_acquire) >> (sub % 64)) & 1;
}

bool Region::MarkSubpageLost(uintptr_t a) {
  uint64_t sub = (a - start) >> kSubpageShift;
  return !(lost_bits[sub / 64].fetch_or(1ull << (sub % 64), std::memory_order_acq_rel) & (1ull << (sub % 64)));
}

std::vector<uint32_t> Region::LostSubpagesOf(uint32_t page) const {
  std::vector<uint32_t> out;
  const std::atomic<uint64_t>* w = lost_bits + static_cast<size_t>(page) * lost_words_per_page;
  for (uint32_t i = 0; i < lost_words_per_page; i++)
    for (uint64_t bits = w[i].load(std::memory_order_acquire); bits; bits &= bits - 1)
      out.push_back(i * 64 + static_cast<uint32_t>(__builtin_ctzll(bits)));
  return out;
}

void Region::ClearPageLost(uint32_t page) {
  for (uint32_t i = 0; i < lost_words_per_page; i++)
    lost_bits[static_cast<size_t>(page) * lost_words_per_page + i].store(0, std::memory_order_release);
}

uint64_t Region::BookkeepingBytes() const {
  return pages * sizeof(uint32_t) + static_cast<uint64_t>(pages) * lost_words_per_page * 8 + sizeof(Region);
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
