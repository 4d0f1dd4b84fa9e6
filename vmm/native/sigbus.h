// sigbus: the VMM's own SIGBUS handler, installed before RasEngine.open as QEMU installs its own.
// The engine chains to it only the SIGBUSes for lost frames. It records si_code, si_addr and
// si_addr_lsb for the thread it ran on (async-signal-safe: atomics and gettid only) and checks
// that the ucontext it got is not null; the vCPU loop picks the record up after KVM_RUN returns.
#pragma once

#include <cstdint>

namespace ras_vmm::sigbus {

constexpr int kMaxThreads = 64;

struct Record {
  int code;
  int lsb;
  uint64_t addr;
};

struct Counters {
  uint64_t total;         // every SIGBUS this handler saw
  uint64_t other_thread;  // on a thread that is not a vCPU
  uint64_t null_ucontext; // with a null ucontext (a chained handler must pass the original)
  int last_code, last_lsb;
  uint64_t last_addr;
};

// Installs the handler (idempotent). Returns false when it could not; `engine_first` tells
// whether some other SA_SIGINFO handler already owned SIGBUS (then the order is wrong).
bool Install(bool* engine_first);
bool Installed();
// Whether the current SIGBUS disposition is still ours (false once an engine chained over it).
bool IsCurrentHandler();
// vCPU threads register their tid in a slot so the handler can tell them apart.
void RegisterThread(int slot);
void UnregisterThread(int slot);
// Takes the pending record of a slot (true if there was one).
bool Take(int slot, Record* out);
Counters Get();

}  // namespace ras_vmm::sigbus
