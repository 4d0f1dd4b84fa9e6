// What a lane does with one report: the poison event, then the policy TypeScript armed for the
// region carried out (refuse, or split via split/), or a new lost subpage of a split page.
#include "lanes/process.h"

#include <unistd.h>

#include <atomic>

#include "capi/capi.h"
#include "split/lazy.h"

namespace ras::lanes {

using tojs::Event;

namespace {
std::atomic<int> g_hold_after_read{0};  // tests only: HoldAfterReadForTests
}  // namespace

bool Recover(Region& r, uint32_t page, const Report& rep, recovery::Readers* readers, std::vector<Event>& out) {
  Event e;
  e.region_id = r.id;
  e.page = page;
  e.report = rep;
  uint32_t reason = r.refuse_reason.load();
  if (reason != kEligible) {
    e.type = tojs::kRefused;
    e.reason = reason;
  } else if (lazy::Begin(r, page, rep, MonotonicNs(), &e.outcome)) {
    // Its known lost subpage is recorded for the C API there, before this releases the waiters.
    EndRecovery(r, page, true);  // the stalled threads go on; missing pieces are filled on touch
    lazy::AfterRelease();
    return true;
  } else {
    e.outcome = recovery::SplitHugePage(r, page, {}, readers);
    for (int armed = 1; g_hold_after_read.compare_exchange_strong(armed, 2);)
      while (g_hold_after_read.load() == 2) usleep(1000);
    lazy::CountEager();
    e.type = e.outcome.ok ? tojs::kRecovered : tojs::kRefused;
    e.reason = e.outcome.ok ? 0u : static_cast<uint32_t>(e.outcome.refuse);
  }
  // Recorded for the C API before anybody is released (a vCPU that asks next finds it), and before
  // the page shows Split (the scan for dropped reports takes an unrecorded lost bit of a Split page
  // for a loss nobody reported).
  if (e.type == tojs::kRecovered)
    for (uint32_t s : e.outcome.lost) capi::RecordLost(r, r.PageAddress(page) + s * kSubpage, kSubpage, rep.code);
  else
    capi::RecordLost(r, r.PageAddress(page), r.huge_size, rep.code);
  if (reason != kEligible)
    Refuse(r, page);
  else
    EndRecovery(r, page, e.outcome.ok);
  e.done_ns = MonotonicNs();
  out.push_back(e);
  return false;
}

bool Process(const Report& rep, std::vector<Event>& out) {
  // Held against removal while this lane works on it (never across a Post to JS).
  RegionRef use = RegionRef::AtSlot(rep.region_slot, rep.region_id);
  if (!use) return false;  // the region was removed since: nobody left to tell
  Region& r = *use;
  uint32_t page = r.PageIndex(rep.addr);
  uint32_t st = StateOf(r.Word(page).load());
  Event poison;
  poison.type = tojs::kPoison;
  poison.region_id = r.id;
  poison.page = page;
  poison.report = rep;
  poison.page_state = rep.page_state;  // what the faulting thread met, not what the worker finds later
  out.push_back(poison);

  if (st == kPending) {
    BeginRecovery(r, page);
    if (r.huge_size >= kSlowLaneFrom && r.refuse_reason.load() == kEligible) {
      QueueSlow(rep, page);
      return true;
    }
    return Recover(r, page, rep, FastReaders(), out);
  }
  if (st == kSplit && (rep.flags & kReportNewSubpageLoss)) {
    Event e;
    e.type = tojs::kSubpageLost;
    e.region_id = r.id;
    e.page = page;
    e.report = rep;
    e.lost_addr = rep.addr & ~(kSubpage - 1);
    // The dropped-report scan may have found the mark before this report was queued: one loss,
    // one record, one event.
    if (capi::RecordLost(r, e.lost_addr, kSubpage, rep.code)) out.push_back(e);
    return false;
  }
  // Any other report that finds the page Split was merged while it was pending or being recovered:
  // the recovery's own read of that subpage decides. A read that failed marked it lost (the
  // recovered event lists it); a read that succeeded copied good data into the memory the guest
  // uses now, whatever the old page says later (a poison that landed after the read hit a page
  // nobody maps any more). A lazy recovery reads each piece when it fills it and marks failures
  // there. Re-reading the old page's file here invented losses (issue 20 #6).
  return false;
}

int HoldAfterReadForTests(int set) { return g_hold_after_read.exchange(set); }

}  // namespace ras::lanes
