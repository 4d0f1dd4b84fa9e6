// Engine lifecycle: init (start the lanes, install the handlers), shutdown, the environment
// cleanup hook, and removing a region.
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <utility>
#include <vector>

#include "binding/binding.h"
#include "binding/errors.h"
#include "capture/signals.h"
#include "lanes/lanes.h"
#include "simulate/simulate.h"
#include "split/mapping.h"
#include "state/state.h"

namespace ras::binding {

namespace {

int g_open_engines = 0;
napi_env g_env = nullptr;  // the JS environment whose engines are open
// Page-state arrays of removed regions: a handler may still be reading them, so they are freed
// only when the last engine closes and no handler can be inside a region any more.
std::vector<std::pair<std::atomic<uint32_t>*, std::atomic<uint64_t>*>> g_graveyard;

void EnvCleanup(void*);

}  // namespace

bool EngineOpen() { return g_open_engines > 0; }

void RemoveRegion(Region& r) {
  r.live.store(2);
  // A recovery lane may be working on it right now (it sees live != 1 only when it starts).
  while (r.busy.load(std::memory_order_acquire) > 0) usleep(200);
  // A deleted file's pages die with its last mapping, poisoned ones included (as in the kernel):
  // a later file that gets the same inode number must not inherit simulated poison.
  struct stat st;
  if (fstat(r.fd, &st) == 0 && st.st_nlink == 0) simulate::ForgetFileRange(r.dev, r.ino, 0, UINT64_MAX / 2);
  // Release every thread waiting on this region: the region is gone, they retry and fail as
  // they would without us.
  for (uint32_t p = 0; p < r.pages; p++) FutexWakeAll(&r.Word(p));
  simulate::ForgetAddressRange(r.start, r.end);
  mapping::Unmap(reinterpret_cast<void*>(r.start), r.end - r.start);
  close(r.fd);
  // Not nulled: a signal handler that found the region a moment ago may still read them.
  g_graveyard.push_back({r.page_words, r.lost_bits});
  r.live.store(0);
}

namespace {

Napi::Value Init(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsFunction()) {
    errors::Code(env, "ERR_INVALID_ARG", "init(callback)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  if (g_open_engines == 0) {
    g_main_tid = Gettid();
    if (!lanes::Start(env, info[0].As<Napi::Function>())) {
      errors::Code(env, "ERR_ENGINE_IN_OTHER_THREAD",
                   "an engine is already open in another JS thread of this process")
          .ThrowAsJavaScriptException();
      return env.Undefined();
    }
    simulate::Enable();
    if (!signals::Install()) {
      int e = errno;
      lanes::Stop();
      errors::Sys(env, e, "sigaction").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    g_env = env;
    napi_add_env_cleanup_hook(env, EnvCleanup, nullptr);
  } else if (g_env != static_cast<napi_env>(env)) {
    errors::Code(env, "ERR_ENGINE_IN_OTHER_THREAD", "an engine is already open in another JS thread of this process")
        .ThrowAsJavaScriptException();
    return env.Undefined();
  }
  g_open_engines++;
  return env.Undefined();
}

// Everything the engines of this process hold: stop the threads, unmap, restore the handlers.
void ShutdownAll() {
  if (g_open_engines == 0) return;
  g_open_engines = 0;
  lanes::Stop();  // no report is processed past here
  for (int i = 0; i < kMaxRegions; i++)
    if (Regions()[i].live.load() == 1) RemoveRegion(Regions()[i]);
  signals::Uninstall();
  for (auto& g : g_graveyard) {
    delete[] g.first;
    delete[] g.second;
  }
  g_graveyard.clear();
  g_paused.store(0);
}

// The JS environment that opened the engines is going away (worker thread ended, process exit)
// without close(): leave no thread, mapping or signal handler behind.
void EnvCleanup(void*) {
  ShutdownAll();
  g_env = nullptr;
}

Napi::Value Shutdown(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (g_open_engines == 0) return env.Undefined();
  if (g_open_engines > 1) {
    g_open_engines--;
    return env.Undefined();
  }
  ShutdownAll();
  if (g_env) napi_remove_env_cleanup_hook(g_env, EnvCleanup, nullptr);
  g_env = nullptr;
  return env.Undefined();
}

}  // namespace

void RegisterLifecycle(Napi::Env env, Napi::Object exports) {
  exports.Set("init", Napi::Function::New(env, Init));
  exports.Set("shutdown", Napi::Function::New(env, Shutdown));
}

}  // namespace ras::binding
