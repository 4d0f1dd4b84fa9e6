// Engine lifecycle: init (start the lanes, install the handlers), shutdown, the environment
// cleanup hook, and removing a region.
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>

#include "binding/binding.h"
#include "binding/errors.h"
#include "capture/signals.h"
#include "lanes/lanes.h"
#include "simulate/simulate.h"
#include "split/mapping.h"
#include "state/state.h"
#include "testing/unmap_window.h"
#include "testing/vcpu.h"

namespace ras::binding {

namespace {

int g_open_engines = 0;
napi_env g_env = nullptr;  // the JS environment whose engines are open
void EnvCleanup(void*);

}  // namespace

bool EngineOpen() { return g_open_engines > 0; }

void RemoveRegion(Region& reg, FinalView* out) {
  testing::AtUnmap(reg);  // tests only: a report captured after close()'s drain (testing/unmap_window.h)
  int slot = -1;
  for (int i = 0; i < kMaxRegions && slot < 0; i++)
    if (RegionAt(i) == &reg) slot = i;
  if (slot < 0) return;
  // Unpublished, its waiters released (they retry and fail as they would without us), and no
  // thread (handler, lane, C API) holds it any more when this returns: it is ours to free.
  Region* r = RetireRegion(slot);
  if (out) {
    out->states.resize(r->pages);
    for (uint32_t p = 0; p < r->pages; p++) out->states[p] = static_cast<uint8_t>(StateOf(r->Word(p).load()));
    r->ForEachLost([&](uint64_t off) { out->lost.push_back(off); });
  }
  // A deleted file's pages die with its last mapping, poisoned ones included (as in the kernel):
  // a later file that gets the same inode number must not inherit simulated poison.
  struct stat st;
  if (fstat(r->fd, &st) == 0 && st.st_nlink == 0) simulate::ForgetFileRange(r->dev, r->ino, 0, UINT64_MAX / 2);
  simulate::ForgetAddressRange(r->start, r->end);
  mapping::Unmap(reinterpret_cast<void*>(r->start), r->end - r->start);
  close(r->fd);
  delete r;
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
  // vCPU load threads touch the regions and wait in the handlers: they go before the regions do.
  vcpu::StopAll();
  lanes::Stop();  // no report is processed past here
  for (int i = 0; i < kMaxRegions; i++)
    if (Region* r = RegionAt(i)) RemoveRegion(*r);
  signals::Uninstall();
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
