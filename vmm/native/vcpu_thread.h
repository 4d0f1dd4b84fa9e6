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

// Asks the engine about addr (by hva or by gpa) until the answer is not RECOVERING, at most 100
// times, counting the RECOVERING answers in *recovering. Returns the API's rc (non-zero: the call
// failed and *st is not an answer).
int AskEngine(const hugetlb_ras_api* api, int wait_ms, bool by_hva, uint64_t addr, hugetlb_ras_status* st,
              std::atomic<uint64_t>* recovering);

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
