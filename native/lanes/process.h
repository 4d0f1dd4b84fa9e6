// A lane's handling of one report (process.cc), and what it needs of the lanes (lanes.cc).
#pragma once

#include <cstdint>
#include <vector>

#include "split/recovery.h"
#include "state/state.h"
#include "tojs/events.h"

namespace ras::lanes {

// Huge pages this large are recovered on the slow lane, so that reading back 1 GiB never holds
// up a 2 MiB page.
constexpr uint64_t kSlowLaneFrom = 64ull << 20;

// The decision the TypeScript policy armed for this region, carried out: refuse, or split. The
// lazy path (split/lazy.h) puts the page in place at once and posts its event when the fill is
// done: then nothing is appended and this returns true (processed is counted there).
bool Recover(Region& r, uint32_t page, const Report& rep, recovery::Readers* readers, std::vector<tojs::Event>& out);

// One report taken off the queue; true when it was handed to the slow lane (it counts as
// processed there).
bool Process(const Report& rep, std::vector<tojs::Event>& out);

// lanes.cc: a big page's recovery for the slow lane; the fast lane's read helpers.
void QueueSlow(const Report& rep, uint32_t page);
recovery::Readers* FastReaders();

}  // namespace ras::lanes
