// The full userfaultfd of the lazy recovery path (split/lazy.h): one per process, opened once.
// Unlike the marker fd of split/uffd.h it must receive kernel-mode faults (KVM's own accesses to
// guest RAM on behalf of a vCPU, a read()/write() syscall into the range): a user-mode-only
// userfaultfd never sees those, and KVM_RUN would fail (EFAULT) or read a hole. So it needs
// /dev/userfaultfd access, vm.unprivileged_userfaultfd = 1, or CAP_SYS_PTRACE (root has it).
// Features asked for: EVENT_REMAP (a registered range keeps its registration when mremap moves it
// into place; mremap then blocks until the monitor has read the event), POISON (Linux >= 6.6:
// markers for lost subpages) and MOVE (Linux >= 6.8: moves pre-faulted pages, a 2 MiB THP whole).
#pragma once

#include <cstdint>

namespace ras::lazyfd {

struct Info {
  bool ok = false;
  int err = 0;                    // why not, when !ok
  const char* syscall = nullptr;  // the call that failed
  const char* why = nullptr;      // in words
};

Info Open();     // opens once; later calls return the same answer. Not signal-safe.
Info Current();
int Fd();        // -1 when not open
void Close();

// Each returns 0 or an errno. Ranges are page aligned.
int Register(uintptr_t addr, uint64_t len);  // MODE_MISSING
int Unregister(uintptr_t addr, uint64_t len);
// Moves [src, src+len) (present, exclusive anonymous pages) to the missing [dst, dst+len) and wakes
// the threads waiting there. A 2 MiB-aligned, PMD-mapped THP moves whole. Where the kernel refuses a
// move (EBUSY: a page it cannot move now) the rest is copied (UFFDIO_COPY, which also wakes).
int Move(uintptr_t dst, uintptr_t src, uint64_t len);
int Copy(uintptr_t dst, uintptr_t src, uint64_t len);  // UFFDIO_COPY; wakes
int Poison(uintptr_t addr, uint64_t len);  // markers on missing pages; wakes the waiters (SIGBUS)
int Wake(uintptr_t addr, uint64_t len);

// While an mremap of a registered range waits for its REMAP event to be read, every fill ioctl
// fails with EAGAIN. The thread that reads the events (the fault thread) installs a hook that
// reads them, so it never waits for itself; other threads back off briefly and retry.
void SetEagainHook(void (*hook)());
int ZeroPage(uintptr_t addr, uint64_t len);  // zeros on missing pages (EEXIST where present); wakes

}  // namespace ras::lazyfd
