// Is a fault stale? A report may describe memory that is fine by the time the handler runs: the
// access happened while the huge page was inaccessible and the engine has fixed it since, or KVM
// delivered its report late (when the vCPU thread left KVM_RUN) for the address the guest touched
// first. Both helpers are async-signal-safe (atomics and one raw syscall).
#pragma once

#include <cstdint>

namespace ras::stale {

// Retry such a fault once: true the first time this thread faults at `addr` with the page word
// `word`; false when the same thread faults again there with the word unchanged (genuine). One
// entry per tid hash, so the table never fills (two threads sharing an entry at the same moment
// cost at most one extra retry).
bool FirstUnexplainedFault(int tid, uintptr_t addr, uint32_t word);

// Ask the kernel whether this byte can be read, without a signal: process_vm_readv on ourselves
// fails with EFAULT on a poison marker, a hwpoison entry, a guard marker or PROT_NONE.
bool KernelCanRead(uintptr_t addr);

}  // namespace ras::stale
