// vcpu_thread: what every vCPU thread of the reference VMM shares, bare-metal (vcpu_loop) and Linux
// (linux_vm) alike: the events it posts to JavaScript, how it learnt of a memory problem, the
// signal that gets it out of KVM_RUN (kick / nudge), its signal mask, the clock, and the question
// to the engine (check_hva / check_gpa until the answer is not RECOVERING).
#pragma once

#include <linux/kvm.h>

#include <atomic>
#include <cstdint>
#include <string>
#include <thread>

#include "hugetlb_ras.h"
#include "sigbus.h"

#ifndef KVM_EXIT_MEMORY_FAULT
#define KVM_EXIT_MEMORY_FAULT 39  // Linux >= 6.8 (KVM_CAP_MEMORY_FAULT_INFO); 6.1 headers lack it
#endif

namespace ras_vmm {

// How the vCPU thread learnt of a memory problem.
enum Path { kPathSigbus = 1, kPathEfault = 2, kPathMmio = 3, kPathNextLost = 4, kPathMemoryFault = 5 };

enum EventType {
  kEvGuest = 1,     // a guest report: v[0] = event, v[1..7] = a..g
  kEvInjected = 2,  // v: gpa, path, status, mcg_status, misc, whole_huge_page, code, errno
  kEvStall = 3,     // v: path, gpa (or hva), ns, final state
  kEvError = 4,     // text
};

struct Event {
  int type;
  int cpu;
  uint64_t v[8];
  std::string text;
};

uint64_t NowNs();

// The signals that take a vCPU thread out of KVM_RUN: the bare-metal machine's kick and the Linux
// machine's nudge (distinct, so that one machine's never lands on the other's threads by mistake).
int KickSignal();
int NudgeSignal();
// Installs an empty handler for sig, once per signal (the signal only has to interrupt KVM_RUN).
void InstallWakeHandler(int sig);
// vCPU threads take no asynchronous signal but wake_sig; faults (SIGBUS from KVM included: it is
// sent, not forced, so a blocked one would stay pending) stay open.
void BlockAsyncSignals(int wake_sig);
// Out of KVM_RUN now: immediate_exit for the next entry, the signal for the current one.
void Wake(kvm_run* run, std::thread& thread, int sig);

// kvm_run->memory_fault's gpa (same union as mmio), for headers that predate it.
uint64_t MemoryFaultGpa(const kvm_run* run);

// Asks the engine about addr (by hva or by gpa) until the answer is not RECOVERING, counting the
// RECOVERING answers in *recovering. Each call waits at most kAskSliceMs, and *quit is looked at
// between calls, so a stop() during a long recovery is seen within a slice; wait_ms bounds the
// whole question (0: one call). A transient rc (-EAGAIN, -EINTR, -ETIMEDOUT) is asked again.
// Returns 0 with an answer, -ECANCELED when *quit was set, -ETIMEDOUT when wait_ms passed with
// RECOVERING answers only (*st then says RECOVERING), or the API's own error (not an answer).
constexpr int kAskSliceMs = 200;
int AskEngine(const hugetlb_ras_api* api, int wait_ms, bool by_hva, uint64_t addr, hugetlb_ras_status* st,
              std::atomic<uint64_t>* recovering, const std::atomic<bool>* quit);

// The entry to KVM_RUN, in the order that loses no kick: clear immediate_exit first, then look at
// quit. A Kick() (quit = true, then immediate_exit = 1 and a signal) that lands anywhere around
// it either makes this return false or leaves immediate_exit set, so KVM_RUN returns at once.
// `between` (tests only) runs between the two steps.
bool EnterGate(kvm_run* run, const std::atomic<bool>* quit, void (*between)(void*) = nullptr, void* arg = nullptr);

// One KVM_RUN: exit_reason zeroed first (an EFAULT leaves it as it was, and a stale
// KVM_EXIT_MEMORY_FAULT would name an old GPA), the sigbus slot marked inside KVM_RUN around it.
// Returns the ioctl's result; errno as it left it.
int RunVcpu(int fd, kvm_run* run, int sigbus_slot);

// An MMIO exit for a READ of a lost frame: KVM retires the instruction at the next KVM_RUN
// whatever the VMM answers (and a read-modify-write instruction exits a second time for its
// write). Completes it without entering the guest (immediate_exit; a second, write exit of the
// same instruction is dropped: the frame is lost), then puts back the registers saved before, so
// the machine check injected next is taken on the instruction that touched the frame and the
// guest re-executes it, as on hardware. Returns true when the registers were put back.
bool RewindMmioRead(int fd, kvm_run* run, int sigbus_slot);

// The VMM's own access to guest RAM (a mailbox read, an MMIO completion, the stop flag): through
// the engine's guarded copy (C API v2 copy_from_guest / copy_to_guest) where the table has it, so
// a lost frame is a bit in a bitmap, never a fault. Returns 0 copied, 1 the range holds a lost
// frame (a read gets zeros there, a write skips it), -ENOSYS no guarded copy in this engine (the
// caller does a raw access: a lost frame then ends the process cleanly, sigbus.h), or the API's
// negative rc. len at most 4096 and within one 4 KiB frame pair.
int GuestCopy(const hugetlb_ras_api* api, uint64_t gpa, void* buf, uint64_t len, bool to_guest, int timeout_ms);
bool HasGuestCopy(const hugetlb_ras_api* api);

#ifndef EHWPOISON
#define EHWPOISON 133
#endif

// Counts the engine's final answer in s.healthy, s.lost or s.not_ram (either machine's stats).
template <class S>
void CountAnswer(S* s, uint32_t state) {
  switch (state) {
    case HUGETLB_RAS_HEALTHY: s->healthy++; break;
    case HUGETLB_RAS_LOST: s->lost++; break;
    case HUGETLB_RAS_NOT_RAM: s->not_ram++; break;
    default: break;
  }
}

// After KVM_RUN failed with EINTR or EAGAIN: true with *hva if a SIGBUS was recorded for this
// thread's sigbus slot (counted in s.eintr_sigbus), else false (counted in s.eintr).
template <class S>
bool TookSigbus(int slot, S* s, uint64_t* hva) {
  sigbus::Record rec;
  if (!sigbus::Take(slot, &rec)) {
    s->eintr++;
    return false;
  }
  s->eintr_sigbus++;
  *hva = rec.addr;
  return true;
}

// An EFAULT from KVM_RUN that its handler resolved nothing for: counts it and backs off 200 µs;
// false when that has happened more than 20000 times in a row (the caller gives up).
bool EfaultUnresolved(std::atomic<uint64_t>* count, uint64_t* in_a_row);

}  // namespace ras_vmm
