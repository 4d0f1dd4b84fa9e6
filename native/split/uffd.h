// userfaultfd poison markers (UFFDIO_POISON, Linux >= 6.6): the lost-subpage guard that KVM
// honours without root. A marker PTE makes every access to that 4 KiB, by a thread or by KVM on
// behalf of a vCPU, fail as hardware poison does (SIGBUS BUS_MCEERR_AR, lsb 12, the exact address)
// and retires no physical page. Observed (KERNEL-FACTS and our probe): a marker placed off to the
// side survives UFFDIO_UNREGISTER and the mremap that swaps the block in; a range that is still
// registered cannot be moved (EFAULT), so registration lasts only for the UFFDIO_POISON call.
#pragma once

#include <cstdint>

namespace ras::uffd {

enum Kind : int {
  kNone = 0,          // no userfaultfd with UFFD_FEATURE_POISON could be opened
  kUserModeOnly = 1,  // UFFD_USER_MODE_ONLY: any user may open it; enough for markers
  kFull = 2,          // also handles kernel-mode faults (root, CAP_SYS_PTRACE, sysctl, /dev/userfaultfd)
};

struct Info {
  Kind kind = kNone;
  int err = 0;                   // why none could be opened (errno), when kind == kNone
  const char* syscall = nullptr;  // the call that failed
};

// Opens the process's userfaultfd once (later calls return the same answer). Not signal-safe.
Info Open();
Info Current();
void Close();

// Replace [addr, addr+len) (page aligned, inside one private anonymous VMA) by poison markers.
// Whatever was there is discarded. Returns 0 or an errno; *syscall names the call that failed.
// `in_place`: the range is live guest memory; on failure it is left PROT_NONE, never readable.
int PoisonRange(char* addr, uint64_t len, bool in_place, const char** syscall);

// Tests (native/testing): the next PoisonRange fails with `err` at its registration, as a transient
// ENOMEM at vm.max_map_count would.
void TestFailNext(int err);

}  // namespace ras::uffd
