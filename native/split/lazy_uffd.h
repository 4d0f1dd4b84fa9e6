// The full userfaultfd of the lazy recovery path (split/lazy.h): one per process, opened once.
// Unlike the marker fd of split/uffd.h it must receive kernel-mode faults (KVM's own accesses to
// guest RAM on behalf of a vCPU, a read()/write() syscall into the range): a user-mode-only
// userfaultfd never sees those, and KVM_RUN would fail (EFAULT) or read a hole. So it needs
// /dev/userfaultfd access, vm.unprivileged_userfaultfd = 1, or CAP_SYS_PTRACE (root has it).
// Features asked for: EVENT_REMAP (the empty range keeps its registration when mremap puts it in
// place; mremap then blocks until the monitor has read the event), POISON (Linux >= 6.6: markers
// for lost subpages) and MOVE (Linux >= 6.8: touched pieces are moved back into the block that
// replaces the range).
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
int Copy(uintptr_t dst, uintptr_t src, uint64_t len);  // UFFDIO_COPY; wakes; pages present already are left
// UFFDIO_MOVE of present pages of [src, src+len) into the missing, registered [dst, dst+len), never a
// copy (the source stays writable meanwhile: a copy could lose a write); holes in src stay holes.
int MoveBack(uintptr_t dst, uintptr_t src, uint64_t len);
int Poison(uintptr_t addr, uint64_t len);  // markers on missing pages; wakes the waiters (SIGBUS)
int Wake(uintptr_t addr, uint64_t len);

// EAGAIN (the mm is changing under a userfaultfd event): the thread that reads the events installs
// a hook that reads them, so it never waits for itself; other threads back off briefly and retry.
void SetEagainHook(void (*hook)());
int ZeroPage(uintptr_t addr, uint64_t len);  // zeros on missing pages (EEXIST where present); wakes

}  // namespace ras::lazyfd
