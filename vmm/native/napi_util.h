// napi_util: the N-API glue both of the VMM's JavaScript classes (Vm in addon.cc, LinuxVm in
// linux_addon.cc) share: argument conversion, the engine's API table and the memory slots from the
// options object, and MachineHost, which owns a machine, the ThreadSafeFunction that carries its
// vCPU events to JS in batches, and the environment cleanup hook that stops its vCPU threads.
#pragma once

#include <napi.h>

#include <memory>
#include <mutex>
#include <utility>
#include <vector>

#include "hugetlb_ras.h"
#include "kvm_vm.h"
#include "vcpu_thread.h"

namespace ras_vmm {

// A bigint, or a number that is a non-negative safe integer; what names it in the error.
uint64_t U64(const Napi::Value& v, const char* what);
inline Napi::Value Big(Napi::Env env, uint64_t v) { return Napi::BigInt::New(env, v); }
// A Buffer's bytes (empty if v is not a Buffer).
std::vector<uint8_t> Bytes(const Napi::Value& v);
// The engine's native API table at address api (0: none); false with a JS exception if its version is unknown.
bool ApiTable(Napi::Env env, uint64_t api, const hugetlb_ras_api** out);
// options.slots: [{gpa, size, hva}].
std::vector<Slot> Slots(const Napi::Object& options);
// Calls cb with the batch as [{type, cpu, v: bigint[8], text?}].
void DeliverEvents(Napi::Env env, Napi::Function cb, const std::vector<Event>& batch);

// M: Start(sink), RequestStop(), Kick(), Join().
template <class M>
class MachineHost {
 public:
  ~MachineHost() { Shutdown(); }

  std::unique_ptr<M> machine;
  bool running() const { return running_; }

  // start(callback): the vCPU threads begin, their events go to callback.
  Napi::Value Start(const Napi::CallbackInfo& info, const char* tsfn_name) {
    Napi::Env env = info.Env();
    if (!machine || running_) NAPI_THROW(Napi::Error::New(env, "not startable"), env.Undefined());
    if (!info[0].IsFunction()) NAPI_THROW(Napi::TypeError::New(env, "callback must be a function"), env.Undefined());
    env_ = env;
    tsfn_ = Napi::ThreadSafeFunction::New(env, info[0].As<Napi::Function>(), tsfn_name, 0, 1);
    running_ = true;
    napi_add_env_cleanup_hook(env, CleanupHook, this);
    machine->Start([this](Event&& e) {
      bool first;
      {
        std::lock_guard<std::mutex> lock(qmu_);
        first = queue_.empty();
        queue_.push_back(std::move(e));
      }
      if (first) tsfn_.NonBlockingCall(this, [](Napi::Env env, Napi::Function cb, MachineHost* self) { self->Deliver(env, cb); });
    });
    return env.Undefined();
  }

  Napi::Value RequestStop(const Napi::CallbackInfo& info) {
    if (machine) machine->RequestStop();
    return info.Env().Undefined();
  }

  Napi::Value Kick(const Napi::CallbackInfo& info) {
    if (machine && running_) machine->Kick();
    return info.Env().Undefined();
  }

  // Joins the threads (call when they are done, or after a kick) and drops the TSFN; the caller returns the stats.
  void Join() {
    if (machine && running_) {
      machine->Join();
      running_ = false;
      napi_remove_env_cleanup_hook(env_, CleanupHook, this);
      tsfn_.Release();
    }
  }

  // Shutdown, then the machine itself: its KVM fds are closed now, not when JS collects the wrapper.
  Napi::Value Dispose(const Napi::CallbackInfo& info) {
    Shutdown();
    machine.reset();
    return info.Env().Undefined();
  }

  // Stops and joins the vCPU threads (kick: no time for the guest to end by itself) and drops the TSFN.
  void Shutdown() {
    if (machine && running_) {
      machine->Kick();
      machine->Join();
    }
    if (running_) {
      running_ = false;
      tsfn_.Release();
      napi_remove_env_cleanup_hook(env_, CleanupHook, this);
    }
  }

 private:
  static void CleanupHook(void* arg) { static_cast<MachineHost*>(arg)->Shutdown(); }

  void Deliver(Napi::Env env, Napi::Function cb) {
    std::vector<Event> batch;
    {
      std::lock_guard<std::mutex> lock(qmu_);
      batch.swap(queue_);
    }
    if (batch.empty()) return;
    DeliverEvents(env, cb, batch);
  }

  Napi::ThreadSafeFunction tsfn_;
  napi_env env_ = nullptr;
  bool running_ = false;
  std::mutex qmu_;
  std::vector<Event> queue_;
};

}  // namespace ras_vmm
