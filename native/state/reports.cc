#include "state/reports.h"

#include <unistd.h>

namespace ras {

namespace {
Counters g_counters;
std::atomic<int> g_event_fd{-1};

struct Cell {
  std::atomic<uint32_t> seq;
  Report report;
};
Cell g_cells[kQueueSize];
std::atomic<uint32_t> g_enqueue_pos{0};
std::atomic<uint32_t> g_dequeue_pos{0};
struct QueueInit {
  QueueInit() {
    for (uint32_t i = 0; i < kQueueSize; i++) g_cells[i].seq.store(i, std::memory_order_relaxed);
  }
} g_queue_init;
}  // namespace

std::atomic<int> g_attention{0};
std::atomic<int> g_paused{0};
std::atomic<int> g_shutdown{0};
int g_main_tid = 0;

bool EnqueueReport(const Report& r) {
  uint32_t pos = g_enqueue_pos.load(std::memory_order_relaxed);
  for (;;) {
    Cell& c = g_cells[pos % kQueueSize];
    uint32_t seq = c.seq.load(std::memory_order_acquire);
    int32_t diff = static_cast<int32_t>(seq - pos);
    if (diff == 0) {
      if (g_enqueue_pos.compare_exchange_weak(pos, pos + 1, std::memory_order_relaxed)) {
        c.report = r;
        // Counted before it is published: a lane never finishes a report that is not counted yet,
        // so processed never catches up with captured while a report is in flight (whenIdle).
        g_counters.captured.fetch_add(1, std::memory_order_acq_rel);
        c.seq.store(pos + 1, std::memory_order_release);
        return true;
      }
    } else if (diff < 0) {
      g_counters.overflow.fetch_add(1, std::memory_order_relaxed);
      return false;
    } else {
      pos = g_enqueue_pos.load(std::memory_order_relaxed);
    }
  }
}

bool DequeueReport(Report* out) {
  uint32_t pos = g_dequeue_pos.load(std::memory_order_relaxed);
  for (;;) {
    Cell& c = g_cells[pos % kQueueSize];
    uint32_t seq = c.seq.load(std::memory_order_acquire);
    int32_t diff = static_cast<int32_t>(seq - (pos + 1));
    if (diff == 0) {
      if (g_dequeue_pos.compare_exchange_weak(pos, pos + 1, std::memory_order_relaxed)) {
        *out = c.report;
        c.seq.store(pos + kQueueSize, std::memory_order_release);
        return true;
      }
    } else if (diff < 0) {
      return false;
    } else {
      pos = g_dequeue_pos.load(std::memory_order_relaxed);
    }
  }
}

bool ReportsWaiting() {
  uint32_t pos = g_dequeue_pos.load(std::memory_order_acquire);
  return g_cells[pos % kQueueSize].seq.load(std::memory_order_acquire) == pos + 1;
}

Counters& GlobalCounters() { return g_counters; }

void SettleForNewEngine() {
  Report r;
  while (DequeueReport(&r)) {
  }
  g_counters.processed.store(g_counters.captured.load());
}

void WakeWorker() {
  int fd = g_event_fd.load(std::memory_order_acquire);
  if (fd >= 0) {
    uint64_t one = 1;
    ssize_t ignored = write(fd, &one, sizeof one);
    (void)ignored;
  }
}

void SetWorkerEventFd(int fd) { g_event_fd.store(fd); }

}  // namespace ras
