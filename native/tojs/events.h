// To JS, the last stage: the lanes hand their events here; they cross to the JS thread through one
// ThreadSafeFunction and become the plain objects src/native.ts describes as NativeEvent.
#pragma once

#include <napi.h>

#include <cstdint>
#include <vector>

#include "split/recovery.h"
#include "state/state.h"

namespace ras::tojs {

// Exported to JS as constants.eventType.
enum EventType { kPoison = 1, kRecovered = 2, kRefused = 3, kSubpageLost = 4 };

struct Event {
  int type = 0;
  uint32_t region_id = 0;
  uint32_t page = 0;
  Report report{};
  recovery::Outcome outcome;
  uint32_t reason = 0;
  uintptr_t lost_addr = 0;
  uint32_t page_state = 0;  // of the huge page when the worker took the report
  uint64_t done_ns = 0;     // when the huge page was usable again (vCPUs released)
  uint64_t filled_ns = 0;   // when all of it was in place (lazy path; else done_ns)
  uint64_t block_fault_ns = 0;  // lazy back half: faulting in a block not from the reserve
};

// On the JS thread, before the lanes start. The function receives arrays of events.
void Start(Napi::Env env, Napi::Function on_events);
// From any lane: hands the batch to JS (and empties it); counted as posted, then delivered.
void Post(std::vector<Event>& batch);
// close(), on the JS thread: the events of every batch posted and not yet delivered, as a JS array
// (they are counted delivered now; their queued calls do nothing). A loss in flight is recorded by
// the closing engine, not dropped with the queue.
napi_value TakePending(napi_env env);
// After the lanes stopped: batches still in flight are dropped, the function released.
void Stop();

}  // namespace ras::tojs
