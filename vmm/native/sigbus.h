// sigbus: the VMM's own SIGBUS handler, installed before RasEngine.open as QEMU installs its own.
// The engine chains to it only the SIGBUSes for lost frames. On a vCPU thread inside KVM_RUN it
// records si_code, si_addr and si_addr_lsb (async-signal-safe: atomics and gettid only) and the
// vCPU loop picks the record up after KVM_RUN returns: KVM_RUN does not re-execute anything.
// Anywhere else (a VMM thread, or a vCPU thread outside KVM_RUN: its own access to guest RAM) an
// action-required SIGBUS means the instruction that faulted would run again on return and fault
// again forever: the process dies at once, as QEMU does ("Hardware memory error"), never spins.
// An action-optional one (nothing re-executes) is counted and ignored.
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
  uint64_t outside_run;   // action-optional, on a vCPU thread outside KVM_RUN (ignored)
  int last_code, last_lsb;
  uint64_t last_addr;
};

// Installs the handler (idempotent). Returns false when it could not, or when some other
// SA_SIGINFO handler already owns SIGBUS (`engine_first`: the order is wrong, nothing changed).
bool Install(bool* engine_first);
bool Installed();
// Whether the current SIGBUS disposition is still ours (false once an engine chained over it).
bool IsCurrentHandler();
// vCPU threads claim a free slot for their tid (any number of VMs per process); -1 when full.
int RegisterThread();
void UnregisterThread(int slot);
// Around every KVM_RUN of a registered thread: only a SIGBUS taken while inside is recorded.
void EnterRun(int slot);
void LeaveRun(int slot);
// The exit status of a process killed by an action-required SIGBUS outside KVM_RUN (QEMU's 1).
constexpr int kExitHardwareMemoryError = 1;
// Takes the pending record of a slot (true if there was one).
bool Take(int slot, Record* out);
Counters Get();

}  // namespace ras_vmm::sigbus
