// Thread slots: what a thread is doing when it touches guest memory decides what the signal handler
// does on a poison. A thread claims a slot for the duration of a guarded operation; the handler
// finds it by tid. Fixed-size and lock-free: the handler reads it.
#pragma once

#include <atomic>
#include <csetjmp>
#include <cstdint>

namespace ras {

constexpr int kMaxThreadSlots = 1024;
// vCPU loads may not take the last slots: the JS thread and the recovery threads need one each.
constexpr int kSlotHeadroom = 16;

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
  uint64_t ns;         // signal to the handler's return (the thread released)
  uint64_t t0;         // when the signal arrived
  uint64_t access_ns;  // signal to the retried access completing (set by the thread; 0 if it did not)
};
struct VcpuLog {
  std::atomic<int> stop{0};  // set to release a vCPU that waits in the handler (engine paused)
  std::atomic<uint32_t> stalls{0};
  StallRecord stall[kMaxStalls];
};

struct ThreadSlot {
  std::atomic<int> tid{0};
  std::atomic<int> mode{kSlotFree};
  // Where a guarded access's own fault jumps to; set only once sigsetjmp has filled it, so a
  // signal in between finds null (the handler then never jumps).
  std::atomic<sigjmp_buf*> jump{nullptr};
  // kSlotJump: how long the handler may wait for a page under recovery; -1 (set by ClaimSlot): the
  // guarded accessors' default (capture/access.h kGuardedWaitMs).
  std::atomic<int> wait_ms{-1};
  std::atomic<uintptr_t> fault_addr{0};
  std::atomic<int> fault_signal{0};
  std::atomic<int> fault_code{0};
  VcpuLog* vcpu = nullptr;
};

ThreadSlot* Slots();  // array of kMaxThreadSlots
ThreadSlot* ClaimSlot(int mode);  // for the calling thread; null when none is free
void ReleaseSlot(ThreadSlot* s);
ThreadSlot* FindSlot(int tid);  // async-signal-safe
int FreeSlots();

}  // namespace ras
