// The report queue from the signal handlers to the recovery lanes, the pipeline's counters, and the
// flags every stage reads (paused, shutting down). Lock-free: producers are signal handlers.
#pragma once

#include <atomic>
#include <cstdint>

namespace ras {

struct Report {
  uintptr_t addr;
  uint64_t time_ns;
  uint32_t region_slot;
  uint32_t region_id;
  int32_t code;  // BUS_MCEERR_AR / BUS_MCEERR_AO
  int32_t lsb;
  int32_t tid;
  uint32_t flags;       // kReportAlreadyLost, kReportNewSubpageLoss
  uint32_t page_state;  // of the huge page when the signal was captured
};
constexpr uint32_t kReportAlreadyLost = 1;
constexpr uint32_t kReportNewSubpageLoss = 2;

// Bounded lock-free multi-producer queue (Vyukov), producers are signal handlers.
constexpr uint32_t kQueueSize = 8192;
bool EnqueueReport(const Report& r);  // false when full (counted as overflow); async-signal-safe
bool DequeueReport(Report* r);
bool ReportsWaiting();  // a report is queued (a lane in the middle of long work takes it first)

struct Counters {
  std::atomic<uint64_t> captured{0};   // reports queued by handlers
  std::atomic<uint64_t> overflow{0};   // reports that found the queue full
  std::atomic<uint64_t> stale{0};      // reports for a healthy frame of a split page (retried)
  std::atomic<uint64_t> processed{0};  // reports the worker finished
  std::atomic<uint64_t> posted{0};     // events handed to JS
  std::atomic<uint64_t> delivered{0};  // events JS has run
};
Counters& GlobalCounters();

// A first engine opens (no lane runs, no region is mapped, the handlers pass everything through):
// whatever the engines before it left behind (reports still queued when their lanes stopped, slow
// lane jobs dropped at stop) will never be processed, so it is taken off the books: the queue is
// emptied and `processed` brought level with `captured`. Counters stay true across stop, JS
// environment teardown and Workers; whenIdle of the new engine waits for its own work only.
void SettleForNewEngine();

void WakeWorker();          // async-signal-safe (eventfd write)
void SetWorkerEventFd(int fd);

// Some region has a Pending page whose report found the queue full (Region::attention): the lanes
// scan for it once the queue is drained, so no page stays Pending with nobody to process it.
extern std::atomic<int> g_attention;
extern std::atomic<int> g_paused;
extern std::atomic<int> g_shutdown;
extern int g_main_tid;

}  // namespace ras
