#include "testing/unmap_window.h"

#include <signal.h>
#include <sys/mman.h>

#include <atomic>

#include "capture/access.h"
#include "simulate/simulate.h"

namespace ras::testing {

namespace {
std::atomic<uint64_t> g_armed{0};  // region id + 1 in the high half, 0: off
std::atomic<uint64_t> g_offset{0};
std::atomic<bool> g_real{false};

// MADV_HWPOISON, as injectPoison's 'madvise' mode does it (the lab: real poison).
void PoisonReally(Region& r, uintptr_t addr) {
  uint32_t page = r.PageIndex(addr);
  uint64_t captured_before = GlobalCounters().captured.load();
  ThreadSlot* slot = ClaimSlot(kSlotReturn);  // 6.12 sends the SIGBUS during the call
  madvise(reinterpret_cast<void*>(addr), kSubpage, MADV_HWPOISON);
  ReleaseSlot(slot);
  if (GlobalCounters().captured.load() == captured_before && StateOf(r.Word(page).load()) == kNormal) {
    char byte;  // kernels that poison silently (6.1) report at the next access
    access::Fault f;
    access::GuardedCopy(&byte, reinterpret_cast<void*>(addr), 1, &f);
  }
}
}  // namespace

void ArmPoisonAtUnmap(uint32_t region_id, uint64_t offset, bool real) {
  g_offset.store(offset);
  g_real.store(real);
  g_armed.store(static_cast<uint64_t>(region_id) + 1);
}

void AtUnmap(Region& r) {
  uint64_t want = static_cast<uint64_t>(r.id) + 1;
  if (!g_armed.compare_exchange_strong(want, 0)) return;
  uintptr_t addr = (r.start + g_offset.load()) & ~(kSubpage - 1);
  if (g_real.load()) return PoisonReally(r, addr);
  const char* syscall = nullptr;
  simulate::Poison(r, addr, BUS_MCEERR_AO, true, &syscall);
}

}  // namespace ras::testing
