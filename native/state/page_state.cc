#include "state/page_state.h"

#include "state/sys.h"

namespace ras {

namespace {

uint32_t NextWord(uint32_t word, uint32_t state) { return ((word + 0x100) & ~0xffu) | state; }

// Transition a page word to a new state and wake every waiter.
void Set(Region& r, uint32_t page, uint32_t state) {
  std::atomic<uint32_t>& w = r.Word(page);
  uint32_t old = w.load(std::memory_order_acquire);
  while (!w.compare_exchange_weak(old, NextWord(old, state), std::memory_order_acq_rel)) {
  }
  FutexWakeAll(&w);
}

// Normal -> `to`, only from Normal.
bool ClaimNormal(Region& r, uint32_t page, uint32_t to) {
  std::atomic<uint32_t>& w = r.Word(page);
  uint32_t word = w.load();
  return StateOf(word) == kNormal && w.compare_exchange_strong(word, NextWord(word, to));
}

}  // namespace

bool MarkPending(std::atomic<uint32_t>& w, uint32_t word) {
  return w.compare_exchange_weak(word, NextWord(word, kPending), std::memory_order_acq_rel);
}

void BeginRecovery(Region& r, uint32_t page) { Set(r, page, kRecovering); }
void EndRecovery(Region& r, uint32_t page, bool split) { Set(r, page, split ? kSplit : kLost); }
void Refuse(Region& r, uint32_t page) { Set(r, page, kLost); }

bool ClaimForReplay(Region& r, uint32_t page) { return ClaimNormal(r, page, kRecovering); }
bool ClaimLost(Region& r, uint32_t page) { return ClaimNormal(r, page, kLost); }
void UndoLost(Region& r, uint32_t page) { Set(r, page, kNormal); }

void ResetPage(Region& r, uint32_t page, bool fresh_huge_page) {
  r.ClearPageLost(page);
  Set(r, page, fresh_huge_page ? kNormal : kSplit);
}

}  // namespace ras
