#include "registry.h"

#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <climits>

namespace ras {

namespace {
Region g_regions[kMaxRegions];
ThreadSlot g_slots[kMaxThreadSlots];
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

std::atomic<int> g_paused{0};
std::atomic<int> g_shutdown{0};
int g_main_tid = 0;

bool Region::SubpageLost(uintptr_t a) const {
  uint64_t sub = (a - start) >> kSubpageShift;
  return (lost_bits[sub / 64].load(std::memory_order_acquire) >> (sub % 64)) & 1;
}

void Region::MarkSubpageLost(uintptr_t a) {
  uint64_t sub = (a - start) >> kSubpageShift;
  lost_bits[sub / 64].fetch_or(1ull << (sub % 64), std::memory_order_acq_rel);
}

bool EnqueueReport(const Report& r) {
  uint32_t pos = g_enqueue_pos.load(std::memory_order_relaxed);
  for (;;) {
    Cell& c = g_cells[pos % kQueueSize];
    uint32_t seq = c.seq.load(std::memory_order_acquire);
    int32_t diff = static_cast<int32_t>(seq - pos);
    if (diff == 0) {
      if (g_enqueue_pos.compare_exchange_weak(pos, pos + 1, std::memory_order_relaxed)) {
        c.report = r;
        c.seq.store(pos + 1, std::memory_order_release);
        g_counters.captured.fetch_add(1, std::memory_order_acq_rel);
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

Counters& GlobalCounters() { return g_counters; }
Region* Regions() { return g_regions; }
ThreadSlot* Slots() { return g_slots; }

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

int Gettid() { return static_cast<int>(syscall(SYS_gettid)); }

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

uint64_t MonotonicNs() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

void FutexWait(std::atomic<uint32_t>* word, uint32_t expected, int timeout_ms) {
  struct timespec ts = {timeout_ms / 1000, (timeout_ms % 1000) * 1000000L};
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAIT, expected, &ts, nullptr, 0);
}

void FutexWakeAll(std::atomic<uint32_t>* word) {
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAKE, INT_MAX, nullptr, nullptr, 0);
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

void SetThreadNice(int nice) {
  if (setpriority(PRIO_PROCESS, static_cast<id_t>(Gettid()), nice) != 0 && nice < 0)
    setpriority(PRIO_PROCESS, static_cast<id_t>(Gettid()), 0);
}

void RaiseThreadPriority(int rt_priority) {
  if (rt_priority <= 0) {
    SetThreadNice(0);
    return;
  }
  struct sched_param sp = {};
  sp.sched_priority = rt_priority;
  if (pthread_setschedparam(pthread_self(), SCHED_FIFO, &sp) == 0) return;
  setpriority(PRIO_PROCESS, static_cast<id_t>(Gettid()), -5 * rt_priority);
}

void SetPageState(Region& r, uint32_t page, uint32_t state) {
  std::atomic<uint32_t>& w = r.Word(page);
  uint32_t old = w.load(std::memory_order_acquire);
  while (!w.compare_exchange_weak(old, NextWord(old, state), std::memory_order_acq_rel)) {
  }
  FutexWakeAll(&w);
}

}  // namespace ras
