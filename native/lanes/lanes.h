// Lanes, the third stage: the native threads that take the handlers' reports, apply the policy
// TypeScript armed for each region (refuse, or split via split/), release the stalled vCPUs, and
// hand events to tojs/. A fast lane (SCHED_FIFO where permitted) for ordinary huge pages, a slow
// lane for 1 GiB ones, and a background thread that keeps the reserve stocked.
#pragma once

#include <napi.h>

namespace ras::lanes {

bool Start(Napi::Env env, Napi::Function on_events);  // false if they run for another env
void Stop();  // joins the threads; called on close and by the environment cleanup hook
// Wakes both lanes to look for work they were not told of (the lanes sleep while nothing is
// pending: a test switch that releases held back halves must call this).
void Wake();

// Tests: armed (1), the next eager recovery holds (state 2) right after its read-back, before the
// page shows Split, until set to 0. Returns the state before the call.
int HoldAfterReadForTests(int set);

}  // namespace ras::lanes
