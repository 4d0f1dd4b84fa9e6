#include "state/region.h"

namespace ras {

namespace {
Region g_regions[kMaxRegions];
}  // namespace

bool Region::SubpageLost(uintptr_t a) const {
  uint64_t sub = (a - start) >> kSubpageShift;
  return (lost_bits[sub / 64].load(std::memory_order_acquire) >> (sub % 64)) & 1;
}

void Region::MarkSubpageLost(uintptr_t a) {
  uint64_t sub = (a - start) >> kSubpageShift;
  lost_bits[sub / 64].fetch_or(1ull << (sub % 64), std::memory_order_acq_rel);
}

Region* Regions() { return g_regions; }

Region* FindRegion(uintptr_t addr, int* slot_out) {
  for (int i = 0; i < kMaxRegions; i++) {
    Region& r = g_regions[i];
    if (r.live.load(std::memory_order_acquire) == 1 && r.Contains(addr)) {
      if (slot_out) *slot_out = i;
      return &r;
    }
  }
  return nullptr;
}

Region* FindRegionById(uint32_t id) {
  for (int i = 0; i < kMaxRegions; i++)
    if (g_regions[i].live.load(std::memory_order_acquire) == 1 && g_regions[i].id == id) return &g_regions[i];
  return nullptr;
}

}  // namespace ras
