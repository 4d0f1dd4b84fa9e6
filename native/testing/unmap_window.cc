#include "testing/unmap_window.h"

#include <signal.h>

#include <atomic>

#include "simulate/simulate.h"

namespace ras::testing {

namespace {
std::atomic<uint64_t> g_armed{0};  // region id + 1 in the high half, 0: off
std::atomic<uint64_t> g_offset{0};
}  // namespace

void ArmPoisonAtUnmap(uint32_t region_id, uint64_t offset) {
  g_offset.store(offset);
  g_armed.store(static_cast<uint64_t>(region_id) + 1);
}

void AtUnmap(Region& r) {
  uint64_t want = static_cast<uint64_t>(r.id) + 1;
  if (!g_armed.compare_exchange_strong(want, 0)) return;
  const char* syscall = nullptr;
  simulate::Poison(r, r.start + g_offset.load(), BUS_MCEERR_AO, true, &syscall);
}

}  // namespace ras::testing
