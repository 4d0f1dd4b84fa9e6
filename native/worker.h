// The one native thread that handles poison reports: it drains the handlers' queue, runs the
// recovery the TypeScript policy armed for each region, releases the stalled vCPUs, and hands
// events to JS through a ThreadSafeFunction. Stopped by an environment cleanup hook.
#pragma once

#include <napi.h>

namespace ras::worker {

bool Start(Napi::Env env, Napi::Function on_events);  // false if one is running for another env
void Stop();

}  // namespace ras::worker
