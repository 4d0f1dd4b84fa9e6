#include "capture/wait.h"

namespace ras::signals::wait {

bool WaitHandledFor(Region& r, uint32_t page, int ms) {
  std::atomic<uint32_t>& w = r.Word(page);
  uint64_t deadline = MonotonicNs() + static_cast<uint64_t>(ms) * 1000000ull;
  for (;;) {
    uint32_t word = w.load(std::memory_order_acquire);
    uint32_t st = StateOf(word);
    if (st != kPending && st != kRecovering) return true;
    if (g_shutdown.load(std::memory_order_acquire) || r.removed.load(std::memory_order_acquire)) return true;
    if (g_paused.load(std::memory_order_acquire) || MonotonicNs() >= deadline) return false;
    FutexWait(&w, word, 20);
  }
}

bool WaitHandled(Region& r, uint32_t page, const VcpuLog* vcpu) {
  std::atomic<uint32_t>& w = r.Word(page);
  for (;;) {
    uint32_t word = w.load(std::memory_order_acquire);
    uint32_t st = StateOf(word);
    if (st != kPending && st != kRecovering) return true;
    if (g_shutdown.load(std::memory_order_acquire) || r.removed.load(std::memory_order_acquire)) return true;
    if (vcpu && vcpu->stop.load(std::memory_order_acquire)) return false;
    FutexWait(&w, word, 20);
  }
}

}  // namespace ras::signals::wait
