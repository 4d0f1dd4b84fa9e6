#include "lanes/dropped.h"

#include <signal.h>

#include "capi/capi.h"

namespace ras::lanes {

// Pending pages whose report found the queue full, and lost subpages of Split pages likewise: their
// handler flagged the region instead (Region::attention). Run once the queue is drained, so a page
// is never left Pending with nobody to process it. Each gets a report of its own, as if
// asynchronous (the faulting address and thread were in the report that was dropped).
uint64_t ScanForDroppedReports(std::vector<tojs::Event>& out, ProcessFn process) {
  if (!g_attention.exchange(0)) return 0;
  uint64_t done = 0;
  for (int i = 0; i < kMaxRegions; i++) {
    RegionRef use = RegionRef::AtSlot(static_cast<uint32_t>(i));
    if (!use || !use->attention.exchange(0)) continue;
    Region& r = *use;
    for (uint32_t p = 0; p < r.pages; p++) {
      uint32_t st = StateOf(r.Word(p).load());
      if (st == kPending) {
        Report rep = {r.PageAddress(p), MonotonicNs(), static_cast<uint32_t>(i), r.id, BUS_MCEERR_AO,
                      static_cast<int32_t>(r.huge_shift), 0, 0, kNormal};
        GlobalCounters().captured.fetch_add(1);  // as if it had been queued: processed catches up with it
        if (!process(rep, out)) done++;
      } else if (st == kSplit) {
        // A loss in the ordinary pages whose report was dropped: its bit is set, nobody recorded it.
        for (uint64_t s = 0; s < r.huge_size / kSubpage; s++) {
          uintptr_t sub = r.PageAddress(p) + s * kSubpage;
          if (!r.SubpageLost(sub) || capi::IsRecorded(r, sub)) continue;
          Report rep = {sub, MonotonicNs(), static_cast<uint32_t>(i), r.id, BUS_MCEERR_AO, kSubpageShift, 0,
                        kReportNewSubpageLoss, kSplit};
          GlobalCounters().captured.fetch_add(1);
          if (!process(rep, out)) done++;
        }
      }
    }
  }
  return done;
}

}  // namespace ras::lanes
