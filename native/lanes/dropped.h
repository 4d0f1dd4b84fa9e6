// The lanes' safety net for a full report queue: a handler that could not queue its report flags
// the region (Region::attention, g_attention) and the fast lane, once the queue is drained, finds
// what the report was about by the page states and the lost bitmap.
#pragma once

#include <cstdint>
#include <vector>

#include "state/state.h"
#include "tojs/events.h"

namespace ras::lanes {

// The lane's own handling of one report; true when it was handed to the slow lane.
using ProcessFn = bool (*)(const Report& rep, std::vector<tojs::Event>& out);

// Returns how many reports were finished here (for the processed counter).
uint64_t ScanForDroppedReports(std::vector<tojs::Event>& out, ProcessFn process);

}  // namespace ras::lanes
