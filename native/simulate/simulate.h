// Simulated hardware poison for machines without CONFIG_MEMORY_FAILURE. It recreates what Linux
// >= 6.5 does: the huge page becomes inaccessible, a BUS_MCEERR SIGBUS with the exact address and
// the huge-page lsb arrives, and reads of the poisoned 4 KiB from the backing file fail with EIO.
// Nothing outside this module knows whether poison is real or simulated: file reads consult
// ClampRead, and the SIGSEGV handler consults the fault hook installed by Enable().
#pragma once

#include <cstdint>

#include "state/state.h"

namespace ras::simulate {

void Enable();  // installs the SIGSEGV fault hook

// Poison the 4 KiB subpage at `addr` of region `r`. `code` is BUS_MCEERR_AR or _AO; with
// `send_signal` the calling thread receives the SIGBUS at once (as with MADV_HWPOISON on 6.12).
// Returns 0 or an errno (syscall name in *syscall).
int Poison(Region& r, uintptr_t addr, int code, bool send_signal, const char** syscall);

// Called right before the original huge page's mapping is replaced (split::SwapIn for the eager
// path, replay, import and reset; the lazy front half's mremap), by whoever moved the page out of
// Normal: waits for a Poison() that read the page as Normal to finish its mprotect. As late as
// that, the injecting thread is long done in practice and nobody waits (bench: a lane that settled
// right after BeginRecovery, or whose file reads waited on the same lock, waited for the injecting
// thread's mprotect, 40-90 us a recovery). Without it that mprotect could land on the replacement,
// leaving healthy memory of a split page PROT_NONE (the lazy-test crash: a vCPU thread's SIGSEGV
// in a Split page that no poison explained, chained to the default action). Free when nothing was
// ever poisoned by simulation.
void Settle();

// Tests: Poison(), between deciding on a Normal page and its mprotect, waits until the page is
// Split or Lost or `ns` have passed (0: off): a recovery of the page brought into that window gets
// as far as it can before the mprotect.
void SetPoisonHoldForTests(uint64_t ns);

// Tests: the file (dev, ino) is poisoned at the 4 KiB holding `off` and nothing mapped changes, as
// when hardware poisons a page of the old huge page that nobody maps any more (a recovery took it
// out of the guest's mapping and reads it back): no signal, only reads of that 4 KiB fail with EIO.
void PoisonFileOnly(uint64_t dev, uint64_t ino, uint64_t off);

// For a read of [off, off+len) of the file (dev, ino): the number of bytes readable before the
// first simulated poisoned subpage, or -1 if `off` itself lies in one (the read fails with EIO).
int64_t ClampRead(uint64_t dev, uint64_t ino, uint64_t off, uint64_t len);

// A hole was punched: the poisoned pages in it are gone, and so are the inaccessible address
// ranges that showed them.
void ForgetFileRange(uint64_t dev, uint64_t ino, uint64_t off, uint64_t len);
void ForgetAddressRange(uintptr_t start, uintptr_t end);

}  // namespace ras::simulate
