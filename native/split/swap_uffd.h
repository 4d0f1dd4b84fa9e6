// The swap of kernels without guard markers (before 6.13) where no poison marker can be had (before
// 6.6, or no userfaultfd poison for this process): the block must replace the huge page in one
// mremap (a hugetlb mapping is replaced whole, and mremap moves one VMA), and a PROT_NONE subpage
// would split it. The old way moved the whole block in PROT_NONE and opened the healthy runs after:
// for that moment KVM's access for a vCPU to any healthy byte of the page failed with EFAULT (a
// QEMU-style VMM aborts). Here the lost subpages are left missing in the block, the block is
// registered MISSING with a userfaultfd (EVENT_REMAP keeps the registration through the mremap), and
// moved in read-write: healthy memory is present and never inaccessible. A touch of a lost subpage
// waits in the kernel until it is PROT_NONE (the fault guard), then faults as it always will.
#pragma once

#include <cstdint>
#include <vector>

namespace ras::swapfd {

enum Result {
  kUnavailable,  // no userfaultfd with EVENT_REMAP here (or the block could not be registered): nothing changed
  kMoved,        // in place, healthy runs open, lost subpages PROT_NONE
  kMoveFailed,   // mremap failed: the block is where it was, unregistered, lost subpages missing (caller drops it)
  kGuardFailed,  // in place, but a lost subpage could not be guarded: the whole range is PROT_NONE
};

// `lost`: sorted subpage indices of the block; its memory there is dropped here first. *err and
// *syscall say why for kMoveFailed and kGuardFailed.
Result MoveIn(char* block, uint64_t size, uintptr_t target, const std::vector<uint32_t>& lost, int* err,
              const char** syscall);

}  // namespace ras::swapfd
