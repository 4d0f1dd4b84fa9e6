// State shared between the signal handlers, the recovery worker and the vCPU threads.
// Everything here is fixed-size and lock-free so a signal handler may read and update it.
#pragma once

#include <atomic>
#include <csetjmp>
#include <cstdint>
#include <ctime>

#include "hugetlb_ras.h"

namespace ras {

constexpr int kMaxRegions = 64;
constexpr int kMaxThreadSlots = 1024;
// vCPU loads may not take the last slots: the JS thread and the recovery threads need one each.
constexpr int kSlotHeadroom = 16;
constexpr uint64_t kSubpage = 4096;
constexpr int kSubpageShift = 12;

// Per huge page state word (futex-waitable): low 8 bits state, upper 24 bits a generation that
// changes on every transition so a waiter never misses one.
enum PageState : uint32_t {
  kNormal = 0,      // the original huge page, healthy as far as we know
  kPending = 1,     // a poison was reported; recovery not started (or engine paused)
  kRecovering = 2,  // the worker is reading it back and swapping it
  kSplit = 3,       // replaced by ordinary pages; lost subpages are guarded
  kLost = 4,        // the whole huge page is lost (refused or recovery failed)
};

inline uint32_t StateOf(uint32_t word) { return word & 0xff; }
inline uint32_t NextWord(uint32_t word, uint32_t state) { return ((word + 0x100) & ~0xffu) | state; }

// Region refusal reasons, decided by the TypeScript policy before any error arrives.
enum RefuseReason : uint32_t {
  kEligible = 0,
  kSharedMapping = 1,
  kVhostUser = 2,
  kIvshmem = 3,
  kVfio = 4,
  kKernelNoReadAround = 5,
  kReadBackFailed = 6,
  kNoMemory = 7,
};

struct Region {
  std::atomic<int> live{0};  // 0 free, 1 live, 2 being removed
  std::atomic<int> busy{0};  // recovery lanes working on this region (removal waits for 0)
  uint32_t id = 0;           // unique per registration, so a late report never hits a reused slot
  uintptr_t start = 0;
  uintptr_t end = 0;
  uint64_t huge_size = 0;
  uint32_t huge_shift = 0;
  int fd = -1;
  uint64_t dev = 0;  // identity of the backing file (the simulation keys poisoned file pages on it)
  uint64_t ino = 0;
  uint64_t file_offset = 0;
  uint32_t pages = 0;                   // number of huge pages
  uint32_t lost_words_per_page = 0;     // 64-bit words of lost-subpage bitmap per huge page
  std::atomic<uint32_t>* page_words = nullptr;
  std::atomic<uint64_t>* lost_bits = nullptr;
  std::atomic<uint32_t> refuse_reason{kEligible};
  // How lost subpages are kept inaccessible: enum hugetlb_ras_guard (include/hugetlb_ras.h). A
  // subpage whose preferred guard failed falls back to a fault guard, and `guard` then says so:
  // it is the weakest guard in use in this region.
  std::atomic<int> guard{HUGETLB_RAS_GUARD_FAULT};
  uint64_t guest_phys = 0;  // guest-physical address of `start` (for the C API's GPA queries)

  bool Contains(uintptr_t a) const { return a >= start && a < end; }
  uint32_t PageIndex(uintptr_t a) const { return static_cast<uint32_t>((a - start) >> huge_shift); }
  uintptr_t PageAddress(uint32_t i) const { return start + (static_cast<uintptr_t>(i) << huge_shift); }
  std::atomic<uint32_t>& Word(uint32_t i) { return page_words[i]; }
  bool SubpageLost(uintptr_t a) const;
  void MarkSubpageLost(uintptr_t a);
};

// What a thread is doing when it touches guest memory decides what the handler does on a poison.
enum SlotMode : int {
  kSlotFree = 0,
  kSlotJump = 1,        // guarded accessor: record the address and siglongjmp out
  kSlotReturn = 2,      // inside a syscall that may raise SIGBUS itself (MADV_HWPOISON): just return
  kSlotVcpu = 3,        // vCPU: wait for the engine, retry; siglongjmp to report an MCE on lost memory
  kSlotSelfPoison = 4,  // worker poisoning its own replacement page: swallow MCE signals outside regions
};

// Filled by the signal handler for a vCPU thread: preallocated, no malloc in the handler.
constexpr uint32_t kMaxStalls = 4096;
struct StallRecord {
  uintptr_t addr;
  uint64_t ns;
};
struct VcpuLog {
  std::atomic<int> stop{0};  // set to release a vCPU that waits in the handler (engine paused)
  std::atomic<uint32_t> stalls{0};
  StallRecord stall[kMaxStalls];
};

struct ThreadSlot {
  std::atomic<int> tid{0};
  std::atomic<int> mode{kSlotFree};
  sigjmp_buf* jump = nullptr;
  std::atomic<uintptr_t> fault_addr{0};
  std::atomic<int> fault_signal{0};
  std::atomic<int> fault_code{0};
  VcpuLog* vcpu = nullptr;
};

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
bool EnqueueReport(const Report& r);  // false when full (counted as overflow)
bool DequeueReport(Report* r);

struct Counters {
  std::atomic<uint64_t> captured{0};   // reports queued by handlers
  std::atomic<uint64_t> overflow{0};   // reports that found the queue full
  std::atomic<uint64_t> stale{0};      // reports for a healthy frame of a split page (retried)
  std::atomic<uint64_t> processed{0};  // reports the worker finished
  std::atomic<uint64_t> posted{0};     // events handed to JS
  std::atomic<uint64_t> delivered{0};  // events JS has run
};

Counters& GlobalCounters();
Region* Regions();  // array of kMaxRegions
ThreadSlot* Slots();  // array of kMaxThreadSlots
Region* FindRegion(uintptr_t addr, int* slot_out);
Region* FindRegionById(uint32_t id);  // a live region, or null

// Thread slots: claim one for the calling thread for the duration of a guarded operation.
ThreadSlot* ClaimSlot(int mode);
void ReleaseSlot(ThreadSlot* s);
ThreadSlot* FindSlot(int tid);  // async-signal-safe
int FreeSlots();

int Gettid();
uint64_t MonotonicNs();
void FutexWait(std::atomic<uint32_t>* word, uint32_t expected, int timeout_ms);
void FutexWakeAll(std::atomic<uint32_t>* word);
void WakeWorker();          // async-signal-safe (eventfd write)
void SetWorkerEventFd(int fd);

extern std::atomic<int> g_paused;
extern std::atomic<int> g_shutdown;
extern int g_main_tid;

// Real-time (SCHED_FIFO) where permitted (root / CAP_SYS_NICE), else a better nice value: a stalled
// vCPU waits for the recovery threads, it must not wait for the scheduler too. Only for short
// bursts: a real-time thread copying 1 GiB would starve every vCPU of a small host.
void RaiseThreadPriority(int rt_priority);
// Normal scheduling with this nice value (a negative one where permitted): for long work that
// should win the CPU without stopping anybody.
void SetThreadNice(int nice);

// Transition a page word to a new state and wake every waiter.
void SetPageState(Region& r, uint32_t page, uint32_t state);

}  // namespace ras
