// Lazy recovery: a stalled vCPU goes on as soon as the part it touched is in place.
//
// The replacement goes in at once: an empty anonymous range, registered MISSING with the full
// userfaultfd (split/lazy_uffd.h), gets a poison marker on the reported subpage if the file says
// it is lost, and is moved over the poisoned huge page with one mremap (EVENT_REMAP keeps the
// registration). The page is Split from then on and its stalled threads are released. A touch of a
// piece not yet there blocks in the kernel until it is: the fault thread fills the faulting 64 KiB
// piece first, background fillers fill the rest in 2 MiB chunks. A piece is read from the file into
// pre-faulted memory off to the side (a reserve block) and moved in with UFFDIO_MOVE, which wakes
// its waiters: nobody ever reads a zero or stale piece. A whole untouched chunk moves as one THP;
// lost subpages found while filling are marked lost first, then get a marker in place (its waiters
// wake to an MCE-style SIGBUS). When every piece is in: UFFDIO_UNREGISTER (markers stay; no
// unpopulated registered 4 KiB is left for a balloon or KVM to trip on), MADV_COLLAPSE of the
// chunks the touches broke into 4 KiB pieces, and the `recovered` event.
#pragma once

#include <cstdint>

#include "split/recovery.h"
#include "state/state.h"

namespace ras::lazy {

// Threads: one fault thread and the background fillers, owned here; from lanes::Start/Stop. Stop
// first finishes every fill in progress (an unfilled registered range would read zeros once the
// userfaultfd is closed).
void Start();
void Stop();

// Tests and the benchmark: false forces the eager path (as where no full userfaultfd exists).
void SetEnabled(bool on);
bool Enabled();
// Why the lazy path is not available (null when it is), for stats().
const char* Unavailable(int* err, const char** syscall);

// On a lane that owns the page (kRecovering): put the replacement in place lazily. True: it is in
// place (`out` says so, out->path = kPathLazy) and the caller may release the page's waiters; the
// `recovered` event (with every lost subpage) is posted later, when the fill completes, together
// with the processed count. False: nothing changed; use the eager path.
bool Begin(Region& r, uint32_t page, const Report& rep, uint64_t t0, recovery::Outcome* out);

// A loss found after the page went in place (marked lost by the caller): if a fill is in progress
// on it, its marker goes in through the fill's userfaultfd (another fd cannot register the range).
// False: no fill there (or the marker failed); guard it the usual way.
bool PoisonInFill(Region& r, uintptr_t sub);

// A fill is in progress (the reserve's refill waits: it competes for the CPU and mmap_lock).
bool Busy();
// Until no fill is in progress on region `r` (reset, removal).
void WaitRegion(const Region& r);

struct Counters {
  uint64_t lazy = 0;          // recoveries that went the lazy way
  uint64_t eager = 0;         // recoveries that went the eager way
  uint64_t fault_fills = 0;   // pieces filled for a waiting thread
  uint64_t chunk_moves = 0;   // 2 MiB chunks moved whole (THP kept)
  uint64_t collapsed = 0;     // chunks put back on a 2 MiB page after the fill
  uint64_t move_fallbacks = 0;  // pages the kernel would not move: read again and copied in
};
Counters GetCounters();
void CountEager();

}  // namespace ras::lazy
