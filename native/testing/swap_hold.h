// Test switch (issue 19 #17): holds the eager swap of a kernel without guard markers at the moment
// the block is in place and its lost subpages are not guarded yet (split/mapping.cc, the PROT_NONE
// way; split/swap_uffd.cc), so a test can look at the page from the kernel's side, as KVM would, in
// a window otherwise a few microseconds long. And that look: a kernel-mode read of guest memory.
// Test-only.
#pragma once

#include <cstdint>

namespace ras::testing {

// 1 arms (the next swap holds), 0 releases, -1 only reads; returns the state (2: holding).
int HoldInSwap(int set);
// At the moment named above: holds there while armed.
void AtSwapWindow();
// Copies [addr, addr+len) with a kernel-mode access (pwrite from it to a memfd, then read back into
// out). 0, or the errno (EFAULT where the kernel cannot access it, as KVM_RUN gets).
int KernelRead(uintptr_t addr, uint64_t len, char* out);

}  // namespace ras::testing
