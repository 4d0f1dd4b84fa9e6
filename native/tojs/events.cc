#include "tojs/events.h"

#include <algorithm>
#include <atomic>
#include <mutex>

namespace ras::tojs {

namespace {

Napi::ThreadSafeFunction g_tsfn;

struct Batch {
  std::vector<Event> events;
  uint32_t generation;
  bool taken = false;  // close() took its events synchronously (TakePending): CallJs skips it
};
std::atomic<uint32_t> g_generation{1};  // bumped when a worker stops
// Posted and not yet called: close() takes them (TakePending) so no loss waits in the queue.
std::mutex g_inflight_mu;
std::vector<Batch*> g_inflight;

void CallJs(Napi::Env env, Napi::Function fn, Batch* batch);

}  // namespace

// Events posted while the JS thread has not yet picked up the last batch join that batch (up to
// kMaxMerged events): no later, and the engine journals a batch's losses with one fsync.
constexpr size_t kMaxMerged = 4096;

void Post(std::vector<Event>& batch) {
  if (batch.empty()) return;
  size_t n = batch.size();
  uint32_t gen = g_generation.load();
  {
    std::lock_guard<std::mutex> lock(g_inflight_mu);
    // CallJs takes a batch out of g_inflight (under this lock) before it reads it.
    Batch* last = g_inflight.empty() ? nullptr : g_inflight.back();
    if (last && !last->taken && last->generation == gen && last->events.size() + n <= kMaxMerged) {
      GlobalCounters().posted.fetch_add(n);
      last->events.insert(last->events.end(), std::make_move_iterator(batch.begin()), std::make_move_iterator(batch.end()));
      batch.clear();
      return;
    }
  }
  auto* heap = new Batch{std::move(batch), gen};
  batch.clear();
  GlobalCounters().posted.fetch_add(n);
  {
    std::lock_guard<std::mutex> lock(g_inflight_mu);
    g_inflight.push_back(heap);
  }
  if (g_tsfn.NonBlockingCall(heap, CallJs) != napi_ok) {
    {
      std::lock_guard<std::mutex> lock(g_inflight_mu);
      g_inflight.erase(std::find(g_inflight.begin(), g_inflight.end(), heap));
    }
    GlobalCounters().delivered.fetch_add(n);
    delete heap;
  }
}


namespace {

// Raw N-API on purpose: this also runs while the environment is torn down, when calls into JS
// fail; node-addon-api would then try to throw, which is fatal at that point. Here a failure just
// drops the batch.
struct ObjectBuilder {
  napi_env env;
  napi_value obj = nullptr;
  bool ok;
  explicit ObjectBuilder(napi_env e) : env(e), ok(napi_create_object(e, &obj) == napi_ok) {}
  void Put(const char* name, napi_value v, napi_status st) {
    ok = ok && st == napi_ok && napi_set_named_property(env, obj, name, v) == napi_ok;
  }
  void U32(const char* n, uint32_t v) { napi_value x = nullptr; Put(n, x, napi_create_uint32(env, v, &x)); }
  void I32(const char* n, int32_t v) { napi_value x = nullptr; Put(n, x, napi_create_int32(env, v, &x)); }
  void F64(const char* n, double v) { napi_value x = nullptr; Put(n, x, napi_create_double(env, v, &x)); }
  void Bool(const char* n, bool v) { napi_value x = nullptr; Put(n, x, napi_get_boolean(env, v, &x)); }
  void Big(const char* n, uint64_t v) { napi_value x = nullptr; Put(n, x, napi_create_bigint_uint64(env, v, &x)); }
  void Str(const char* n, const char* v) { napi_value x = nullptr; Put(n, x, napi_create_string_utf8(env, v, NAPI_AUTO_LENGTH, &x)); }
};

bool BuildEvent(napi_env env, const Event& e, napi_value* out) {
  ObjectBuilder o(env);
  o.U32("type", static_cast<uint32_t>(e.type));
  o.U32("regionId", e.report.region_id);
  o.U32("page", e.page);
  o.Big("address", static_cast<uint64_t>(e.report.addr));
  o.I32("code", e.report.code);
  o.I32("lsb", e.report.lsb);
  o.I32("tid", e.report.tid);
  o.Big("timeNs", e.report.time_ns);
  o.Bool("alreadyLost", (e.report.flags & kReportAlreadyLost) != 0);
  o.U32("pageState", e.page_state);
  if (e.type == kRecovered || e.type == kRefused) {
    napi_value lost = nullptr;
    bool ok = napi_create_array_with_length(env, e.outcome.lost.size(), &lost) == napi_ok;
    for (size_t j = 0; ok && j < e.outcome.lost.size(); j++) {
      napi_value v = nullptr;
      ok = napi_create_uint32(env, e.outcome.lost[j], &v) == napi_ok &&
           napi_set_element(env, lost, static_cast<uint32_t>(j), v) == napi_ok;
    }
    o.Put("lostSubpages", lost, ok ? napi_ok : napi_generic_failure);
    o.F64("bytes", static_cast<double>(e.outcome.bytes));
    o.U32("reads", e.outcome.reads);
    o.Big("durationNs", e.outcome.ns);
    o.Big("doneNs", e.done_ns);
    o.Bool("usedReserve", e.outcome.used_reserve);
    o.Str("path", e.outcome.path == recovery::kPathLazy ? "lazy" : "eager");
    o.Big("filledNs", e.filled_ns ? e.filled_ns : e.done_ns);
    o.Big("blockFaultNs", e.block_fault_ns);
    o.I32("guard", e.outcome.guard);
    o.I32("guardErrno", e.outcome.guard_errno);
    if (e.outcome.guard_syscall) o.Str("guardSyscall", e.outcome.guard_syscall);
    o.U32("reason", e.reason);
    o.I32("errno", e.outcome.err);
    if (e.outcome.syscall) o.Str("syscall", e.outcome.syscall);
  }
  if (e.type == kSubpageLost) o.Big("lostAddress", static_cast<uint64_t>(e.lost_addr));
  *out = o.obj;
  return o.ok;
}

bool BuildArray(napi_env e, const std::vector<Event>& events, napi_value* arr) {
  bool ok = napi_create_array_with_length(e, events.size(), arr) == napi_ok;
  for (size_t i = 0; ok && i < events.size(); i++) {
    napi_value v = nullptr;
    ok = BuildEvent(e, events[i], &v) && napi_set_element(e, *arr, static_cast<uint32_t>(i), v) == napi_ok;
  }
  return ok;
}

void CallJs(Napi::Env env, Napi::Function fn, Batch* batch) {
  size_t n;
  bool taken;
  {
    std::lock_guard<std::mutex> lock(g_inflight_mu);
    auto it = std::find(g_inflight.begin(), g_inflight.end(), batch);
    if (it != g_inflight.end()) g_inflight.erase(it);
    taken = batch->taken;
    n = batch->events.size();  // Post may have merged events into it until now (under this lock)
  }
  if (taken) {  // close() delivered (and counted) it already
    delete batch;
    return;
  }
  // A batch from a worker that has stopped since (engine closed) has nobody left to tell, and it is
  // not counted: the next engine's Start settled the books without it (batches an environment being
  // torn down drops come nowhere near here: node-addon-api returns before calling us).
  bool current = batch->generation == g_generation.load();
  if (env != nullptr && fn != nullptr && current) {
    napi_env e = env;
    napi_value arr = nullptr;
    bool ok = BuildArray(e, batch->events, &arr);
    napi_value global = nullptr, result = nullptr;
    if (ok && napi_get_global(e, &global) == napi_ok) {
      napi_value args[1] = {arr};
      napi_call_function(e, global, static_cast<napi_value>(fn), 1, args, &result);
    }
  }
  if (current) GlobalCounters().delivered.fetch_add(n);
  delete batch;
}

}  // namespace

napi_value TakePending(napi_env env) {
  std::vector<Event> events;
  {
    std::lock_guard<std::mutex> lock(g_inflight_mu);
    uint32_t gen = g_generation.load();
    for (Batch* b : g_inflight) {
      // Only this engine's: a stopped engine's batch (a Worker's, an environment torn down) is not ours to deliver.
      if (b->taken || b->generation != gen) continue;
      b->taken = true;
      events.insert(events.end(), b->events.begin(), b->events.end());
    }
  }
  GlobalCounters().delivered.fetch_add(events.size());  // delivered by the caller, now
  napi_value arr = nullptr;
  if (!BuildArray(env, events, &arr)) napi_create_array(env, &arr);
  return arr;
}

void Start(Napi::Env env, Napi::Function on_events) {
  // Batches of stopped engines never delivered (their environment was torn down, or they come
  // later with an old generation and are not counted): off the books before this engine posts.
  GlobalCounters().delivered.store(GlobalCounters().posted.load());
  g_tsfn = Napi::ThreadSafeFunction::New(env, on_events, "hugetlb-ras-events", 0, 1);
  g_tsfn.Unref(env);  // an idle engine must not keep the process alive
}

void Stop() {
  g_generation.fetch_add(1);
  g_tsfn.Release();
}

}  // namespace ras::tojs
