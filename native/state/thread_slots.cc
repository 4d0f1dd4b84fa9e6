#include "state/thread_slots.h"

#include "state/sys.h"

namespace ras {

namespace {
ThreadSlot g_slots[kMaxThreadSlots];
}  // namespace

ThreadSlot* Slots() { return g_slots; }

ThreadSlot* ClaimSlot(int mode) {
  int tid = Gettid();
  for (int i = 0; i < kMaxThreadSlots; i++) {
    int expected = 0;
    if (g_slots[i].tid.compare_exchange_strong(expected, tid)) {
      g_slots[i].fault_addr.store(0);
      g_slots[i].fault_signal.store(0);
      g_slots[i].fault_code.store(0);
      g_slots[i].vcpu = nullptr;
      g_slots[i].jump = nullptr;
      g_slots[i].wait_ms.store(-1, std::memory_order_relaxed);
      g_slots[i].mode.store(mode, std::memory_order_release);
      return &g_slots[i];
    }
  }
  return nullptr;
}

void ReleaseSlot(ThreadSlot* s) {
  if (!s) return;
  s->mode.store(kSlotFree, std::memory_order_release);
  s->jump = nullptr;
  s->vcpu = nullptr;
  s->tid.store(0, std::memory_order_release);
}

int FreeSlots() {
  int n = 0;
  for (int i = 0; i < kMaxThreadSlots; i++) n += g_slots[i].tid.load(std::memory_order_acquire) == 0;
  return n;
}

ThreadSlot* FindSlot(int tid) {
  for (int i = 0; i < kMaxThreadSlots; i++) {
    if (g_slots[i].tid.load(std::memory_order_acquire) == tid &&
        g_slots[i].mode.load(std::memory_order_acquire) != kSlotFree)
      return &g_slots[i];
  }
  return nullptr;
}

}  // namespace ras
