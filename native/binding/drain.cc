// close()'s drain: before an engine unmaps its regions, every recovery in flight is finished (the
// reports waiting are processed, even on a paused engine; lazy back halves complete, a test hold on
// them ends) within a bound, and the events posted but not yet delivered are handed to the caller
// synchronously, so that their losses reach the journal before close() returns. What did not finish
// in time is listed (the caller records it whole).
#include <time.h>

#include <chrono>
#include <thread>

#include "binding/args.h"
#include "binding/binding.h"
#include "split/lazy.h"
#include "state/state.h"
#include "tojs/events.h"

namespace ras::binding {

namespace {

bool Settled() {
  auto& c = GlobalCounters();
  return c.processed.load() >= c.captured.load() && !lazy::Busy();
}

// drain(timeoutMs) -> { events, settled, inFlight: [[regionId, page], ...] }
Napi::Value Drain(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint64_t timeout_ms;
  if (!Uint(env, info[0], "timeoutMs", &timeout_ms)) return env.Undefined();
  Napi::Object o = Napi::Object::New(env);
  bool settled = true;
  if (EngineOpen()) {
    int was_paused = g_paused.exchange(0);
    lazy::HoldBackHalves(false);
    WakeWorker();
    auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    while (!(settled = Settled()) && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    if (was_paused) {
      g_paused.store(was_paused);  // other engines of the process stay paused
      WakeWorker();
    }
  }
  std::vector<std::pair<uint32_t, uint32_t>> in_flight;
  lazy::InFlight(&in_flight);
  Napi::Array jobs = Napi::Array::New(env, in_flight.size());
  for (size_t i = 0; i < in_flight.size(); i++) {
    Napi::Array pair = Napi::Array::New(env, 2);
    pair.Set(0u, in_flight[i].first);
    pair.Set(1u, in_flight[i].second);
    jobs.Set(static_cast<uint32_t>(i), pair);
  }
  o.Set("events", Napi::Value(env, tojs::TakePending(env)));
  o.Set("settled", settled);
  o.Set("inFlight", jobs);
  return o;
}

}  // namespace

void RegisterDrain(Napi::Env env, Napi::Object exports) { exports.Set("drain", Napi::Function::New(env, Drain)); }

}  // namespace ras::binding
