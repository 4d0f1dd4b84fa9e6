#include "capture/wait.h"

#include <errno.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "hugetlb_ras.h"

namespace ras::signals::wait {

namespace {
// A lazy recovery releases a 2 MiB page's threads some tens of microseconds after the fault; a
// futex sleep then costs the wake-up on top (a scheduler round trip on a busy host, often longer
// than the recovery). So a stalled thread first polls its page word for up to this long, on its own
// CPU (yielding it would hand it to another busy thread for a whole time slice), then sleeps.
constexpr uint64_t kSpinNs = 200000;

bool Settled(uint32_t word) {
  uint32_t st = StateOf(word);
  return st != kPending && st != kRecovering;
}

void Spin(Region& r, std::atomic<uint32_t>& w) {
  uint64_t until = MonotonicNs() + kSpinNs;
  for (int i = 0;; i++) {
    if (Settled(w.load(std::memory_order_acquire)) || r.removed.load(std::memory_order_acquire)) return;
    if ((i & 63) == 63 && MonotonicNs() >= until) return;
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
  }
}
}  // namespace

bool WaitHandledFor(Region& r, uint32_t page, int ms) {
  std::atomic<uint32_t>& w = r.Word(page);
  uint64_t deadline = MonotonicNs() + static_cast<uint64_t>(ms) * 1000000ull;
  for (;;) {
    uint32_t word = w.load(std::memory_order_acquire);
    if (Settled(word)) return true;
    if (g_shutdown.load(std::memory_order_acquire) || r.removed.load(std::memory_order_acquire)) return true;
    if (g_paused.load(std::memory_order_acquire) || MonotonicNs() >= deadline) return false;
    FutexWait(&w, word, 20);
  }
}

bool WaitHandled(Region& r, uint32_t page, const VcpuLog* vcpu) {
  std::atomic<uint32_t>& w = r.Word(page);
  // A thread without a slot (a VMM's vCPU) never waits longer than the header's
  // HUGETLB_RAS_FOREIGN_WAIT_MS, paused engine or not, nor past a signal handled on it meanwhile
  // (its VMM's kick): the handler returns, KVM_RUN reports EINTR, and the access faults again
  // later. (Not at once while paused: a thread whose access faults again at once would spin
  // through the handler, a report each time, until resume().)
  Spin(r, w);
  uint64_t deadline = MonotonicNs() + static_cast<uint64_t>(HUGETLB_RAS_FOREIGN_WAIT_MS) * 1000000ull;
  for (;;) {
    uint32_t word = w.load(std::memory_order_acquire);
    if (Settled(word)) return true;
    if (g_shutdown.load(std::memory_order_acquire) || r.removed.load(std::memory_order_acquire)) return true;
    if (vcpu && vcpu->stop.load(std::memory_order_acquire)) return false;
    if (!vcpu && MonotonicNs() >= deadline) return false;
    struct timespec ts = {0, 20 * 1000000L};
    long rc = syscall(SYS_futex, reinterpret_cast<uint32_t*>(&w), FUTEX_WAIT, word, &ts, nullptr, 0);
    if (!vcpu && rc == -1 && errno == EINTR) return false;  // a handler ran on this thread: a kick
  }
}

}  // namespace ras::signals::wait
