// Lazy recovery: a stalled vCPU goes on as soon as the piece it touched is in place.
//
// Front half, on the lane that owns the page: an empty anonymous range takes the huge page's place
// (MAP_FIXED, PROT_NONE until it is registered MISSING with the full userfaultfd of
// split/lazy_uffd.h, then opened), the touched 64 KiB piece is read from the file and copied in
// (its lost subpages marked and given a poison marker), and the page's stalled threads are
// released. A touch of any other piece blocks in the kernel until the fault thread has copied that
// piece in: nobody ever reads a zero or stale piece. Back half, on the same lane once idle: the whole page is read
// into a pre-faulted block off to the side (the reserve's), the pieces touched meanwhile are moved
// back into it with UFFDIO_MOVE (with whatever the guest wrote there), the lost subpages get their
// markers in the block, and one mremap puts the block in place of the registered range: the eager
// path's end state (one VMA, 2 MiB THPs, nothing registered), then UFFDIO_WAKE for the threads
// that touched meanwhile and MADV_COLLAPSE of the chunks touches broke. Then the `recovered` event.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include "split/recovery.h"
#include "state/state.h"

namespace ras::lazy {

// Threads: one fault thread, owned here; from lanes::Start/Stop. Stop (after the lanes stopped)
// first finishes every recovery still in progress.
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
// Back halves run on the lane that ran the front half, once it has no report left to take: on the
// CPU it already holds, so the released vCPU keeps its own (a separate filler thread woken at the
// release preempted exactly that vCPU), and never ahead of another page's front half. The fast
// lane takes pages of 2 MiB, the slow lane bigger ones. True: one was run.
bool CompleteOne(bool big);
// Right after the caller released the waiters of a page Begin put in place (same thread): the rest
// of the touched piece.
void AfterRelease();
bool Pending(bool big);
// Tests: while held, no back half starts (Stop still finishes them).
void HoldBackHalves(bool on);

// A fill is in progress (the reserve's refill waits: it competes for the CPU and mmap_lock).
bool Busy();
// close(): (region id, page) of every recovery whose back half is not done yet.
void InFlight(std::vector<std::pair<uint32_t, uint32_t>>* out);
// Until no fill is in progress on region `r` (reset, removal).
void WaitRegion(const Region& r);

struct Counters {
  uint64_t lazy = 0;          // recoveries that went the lazy way
  uint64_t eager = 0;         // recoveries that went the eager way
  uint64_t fault_fills = 0;   // pieces filled for a thread that touched them (not the first toucher)
  uint64_t taken_back = 0;    // touched pieces moved back into the block before the swap
  uint64_t collapsed = 0;     // chunks put back on a 2 MiB page after the swap
  uint64_t in_place_finishes = 0;  // the block could not go in: the range was filled in place
};
Counters GetCounters();
void CountEager();

}  // namespace ras::lazy
