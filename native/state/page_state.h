// The state of each huge page, and the only functions that change it.
//
// One 32-bit word per huge page (Region::Word, futex-waitable): the low 8 bits are the state, the
// upper 24 bits a generation that changes on every transition so a waiter never misses one. Every
// transition below wakes the word's waiters except where noted; readers (handlers, lanes, guarded
// access, introspection) use StateOf() on a loaded word.
//
//            MarkPending          BeginRecovery            EndRecovery, Refuse
//   Normal -------------> Pending -------------> Recovering -------------------> Split | Lost
//    ^  |  signal handler         a lane takes       ^                               |
//    |  |  (first report)         the report         |                               |
//    |  +--- ClaimForReplay (restart, journal) ------+                               |
//    |  +--- ClaimLost (restart, journal) ---------------------------------> Lost    |
//    |                                                                               |
//    +------ ResetPage(fresh huge page) (guest reset), UndoLost ---------------------+
//            ResetPage(no huge page): Split | Lost -> Split
//
//   from        to          when                                               function
//   Normal      Pending     signal handler, first poison report for the page   MarkPending
//   Pending     Recovering  a lane takes the report (not while paused), or      BeginRecovery
//                           finds the page by its state when the report found
//                           the queue full (the handler flagged the region)
//   Recovering  Split       replacement in place, lost subpages guarded        EndRecovery(true)
//   Recovering  Lost        the split failed (read-back, memory, swap; a swap  EndRecovery(false)
//                           that failed half-way leaves the page all PROT_NONE
//                           and no lost subpage bits)
//   Recovering  Lost        the region's armed policy refuses recovery         Refuse
//   Normal      Recovering  restart: the journal lists lost subpages           ClaimForReplay
//   Normal      Lost        restart: the journal says the page was refused     ClaimLost
//   Lost        Normal      ClaimLost could not make the page inaccessible     UndoLost
//   Split|Lost  Normal      guest reset: a fresh huge page is mapped           ResetPage(true)
//   Split|Lost  Split       guest reset, pool empty: fresh ordinary pages      ResetPage(false)
//
// Nothing else changes a page state. A Split page stays Split when more of its subpages are lost
// later (only the lost bitmap grows); reports for a Pending, Recovering or Lost page merge into the
// state it has. A paused engine leaves pages Pending.
#pragma once

#include <atomic>
#include <cstdint>

#include "state/region.h"

namespace ras {

enum PageState : uint32_t {
  kNormal = 0,      // the original huge page, healthy as far as we know
  kPending = 1,     // a poison was reported; recovery not started (or engine paused)
  kRecovering = 2,  // a lane is reading it back and swapping it
  kSplit = 3,       // replaced by ordinary pages; lost subpages are guarded
  kLost = 4,        // the whole huge page is lost (refused or recovery failed)
};

inline uint32_t StateOf(uint32_t word) { return word & 0xff; }

// Signal handler, first report: Normal -> Pending if the word is still `word` (no wake: nobody
// waits on a Normal page). False if it changed meanwhile: load and decide again. Async-signal-safe.
bool MarkPending(std::atomic<uint32_t>& w, uint32_t word);

// Lane: Pending -> Recovering (the lane owns the page from here).
void BeginRecovery(Region& r, uint32_t page);
// Recovering -> Split (the replacement is in place) or Lost (the split failed).
void EndRecovery(Region& r, uint32_t page, bool split);
// Recovering -> Lost: the region's armed policy refuses recovery.
void Refuse(Region& r, uint32_t page);

// Journal replay, Normal -> Recovering (no wake); false if the page is not Normal (busy).
bool ClaimForReplay(Region& r, uint32_t page);
// Journal replay, Normal -> Lost (no wake); false if the page is not Normal.
bool ClaimLost(Region& r, uint32_t page);
// Lost -> Normal: ClaimLost could not make the page inaccessible after all.
void UndoLost(Region& r, uint32_t page);

// Guest reset of a Split or Lost page whose memory was replaced: clears its lost subpages, then
// -> Normal (a fresh huge page) or -> Split (fresh ordinary pages).
void ResetPage(Region& r, uint32_t page, bool fresh_huge_page);

}  // namespace ras
