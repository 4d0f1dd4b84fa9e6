// addon.cc: the JavaScript face of the reference VMM's native module (ras_vmm.node). Thin: it
// converts arguments, owns the ThreadSafeFunction that carries vCPU events to JS, and stops the
// vCPU threads from an environment cleanup hook. The KVM work is in kvm_vm, vcpu_loop and mce.
#include <napi.h>

#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include <memory>
#include <mutex>
#include <vector>

#include "sigbus.h"
#include "vcpu_loop.h"

namespace ras_vmm {

namespace {

uint64_t U64(const Napi::Value& v, const char* what) {
  if (v.IsBigInt()) {
    bool lossless = true;
    uint64_t x = v.As<Napi::BigInt>().Uint64Value(&lossless);
    if (!lossless) NAPI_THROW(Napi::RangeError::New(v.Env(), std::string(what) + " out of range"), 0);
    return x;
  }
  if (v.IsNumber()) {
    double d = v.As<Napi::Number>().DoubleValue();
    if (d < 0 || d > 9007199254740991.0 || d != static_cast<double>(static_cast<uint64_t>(d)))
      NAPI_THROW(Napi::RangeError::New(v.Env(), std::string(what) + " must be a non-negative integer"), 0);
    return static_cast<uint64_t>(d);
  }
  NAPI_THROW(Napi::TypeError::New(v.Env(), std::string(what) + " must be a bigint or a number"), 0);
}

Napi::Value Big(Napi::Env env, uint64_t v) { return Napi::BigInt::New(env, v); }

class VmWrap : public Napi::ObjectWrap<VmWrap> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "Vm",
                       {InstanceMethod("start", &VmWrap::Start), InstanceMethod("requestStop", &VmWrap::RequestStop),
                        InstanceMethod("kick", &VmWrap::Kick), InstanceMethod("allDone", &VmWrap::AllDone),
                        InstanceMethod("join", &VmWrap::Join), InstanceMethod("stats", &VmWrap::Stats),
                        InstanceMethod("info", &VmWrap::Info)});
  }

  explicit VmWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<VmWrap>(info) {
    Napi::Env env = info.Env();
    if (!info[0].IsObject()) {
      Napi::TypeError::New(env, "options must be an object").ThrowAsJavaScriptException();
      return;
    }
    Napi::Object o = info[0].As<Napi::Object>();
    Config cfg;
    cfg.vcpus = o.Get("vcpus").As<Napi::Number>().Int32Value();
    cfg.seed = U64(o.Get("seed"), "seed");
    if (o.Has("waitMs") && o.Get("waitMs").IsNumber()) cfg.wait_ms = o.Get("waitMs").As<Napi::Number>().Int32Value();
    if (o.Has("passEventMs") && o.Get("passEventMs").IsNumber())
      cfg.pass_event_ms = o.Get("passEventMs").As<Napi::Number>().Int32Value();
    uint64_t api = U64(o.Get("api"), "api");
    if (env.IsExceptionPending()) return;
    if (api) {
      cfg.api = reinterpret_cast<const hugetlb_ras_api*>(static_cast<uintptr_t>(api));
      if (cfg.api->version < 1 || cfg.api->size < sizeof(hugetlb_ras_api)) {
        Napi::Error::New(env, "the engine's native API table has an unknown version").ThrowAsJavaScriptException();
        return;
      }
    }
    std::vector<Slot> slots;
    Napi::Array sa = o.Get("slots").As<Napi::Array>();
    for (uint32_t k = 0; k < sa.Length(); k++) {
      Napi::Object s = sa.Get(k).As<Napi::Object>();
      Slot sl;
      sl.gpa = U64(s.Get("gpa"), "slot gpa");
      sl.size = U64(s.Get("size"), "slot size");
      sl.hva = reinterpret_cast<uint8_t*>(static_cast<uintptr_t>(U64(s.Get("hva"), "slot hva")));
      slots.push_back(sl);
    }
    Napi::Array ra = o.Get("ranges").As<Napi::Array>();
    for (uint32_t k = 0; k < ra.Length(); k++) {
      Napi::Object r = ra.Get(k).As<Napi::Object>();
      cfg.ranges.push_back({U64(r.Get("gpa"), "range gpa"), U64(r.Get("size"), "range size")});
    }
    if (env.IsExceptionPending()) return;
    Napi::Buffer<uint8_t> img = o.Get("image").As<Napi::Buffer<uint8_t>>();
    std::vector<uint8_t> image(img.Data(), img.Data() + img.Length());
    machine_ = std::make_unique<Machine>();
    if (!machine_->Create(cfg, slots, image)) {
      Napi::Error::New(env, "KVM: " + machine_->error()).ThrowAsJavaScriptException();
      machine_.reset();
    }
  }

  ~VmWrap() override { Shutdown(); }

 private:
  static void CleanupHook(void* arg) { static_cast<VmWrap*>(arg)->Shutdown(); }

  // Stops and joins the vCPU threads (kick: no time for the guest to say BYE) and drops the TSFN.
  void Shutdown() {
    if (machine_ && running_) {
      machine_->Kick();
      machine_->Join();
    }
    if (running_) {
      running_ = false;
      tsfn_.Release();
      napi_remove_env_cleanup_hook(env_, CleanupHook, this);
    }
  }

  Napi::Value Start(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!machine_ || running_) NAPI_THROW(Napi::Error::New(env, "not startable"), env.Undefined());
    if (!info[0].IsFunction()) NAPI_THROW(Napi::TypeError::New(env, "callback must be a function"), env.Undefined());
    env_ = env;
    tsfn_ = Napi::ThreadSafeFunction::New(env, info[0].As<Napi::Function>(), "ras_vmm events", 0, 1);
    running_ = true;
    napi_add_env_cleanup_hook(env, CleanupHook, this);
    machine_->Start([this](Event&& e) {
      bool first;
      {
        std::lock_guard<std::mutex> lock(qmu_);
        first = queue_.empty();
        queue_.push_back(std::move(e));
      }
      if (first) tsfn_.NonBlockingCall(this, [](Napi::Env env, Napi::Function cb, VmWrap* self) { self->Deliver(env, cb); });
    });
    return env.Undefined();
  }

  void Deliver(Napi::Env env, Napi::Function cb) {
    std::vector<Event> batch;
    {
      std::lock_guard<std::mutex> lock(qmu_);
      batch.swap(queue_);
    }
    if (batch.empty()) return;
    Napi::Array arr = Napi::Array::New(env, batch.size());
    for (size_t k = 0; k < batch.size(); k++) {
      const Event& e = batch[k];
      Napi::Object o = Napi::Object::New(env);
      o.Set("type", e.type);
      o.Set("cpu", e.cpu);
      Napi::Array v = Napi::Array::New(env, 8);
      for (uint32_t j = 0; j < 8; j++) v.Set(j, Big(env, e.v[j]));
      o.Set("v", v);
      if (!e.text.empty()) o.Set("text", e.text);
      arr.Set(static_cast<uint32_t>(k), o);
    }
    cb.Call({arr});
  }

  Napi::Value RequestStop(const Napi::CallbackInfo& info) {
    if (machine_) machine_->RequestStop();
    return info.Env().Undefined();
  }
  Napi::Value Kick(const Napi::CallbackInfo& info) {
    if (machine_ && running_) machine_->Kick();
    return info.Env().Undefined();
  }
  Napi::Value AllDone(const Napi::CallbackInfo& info) {
    return Napi::Boolean::New(info.Env(), !machine_ || !running_ || machine_->AllDone());
  }

  // Joins the threads (call when allDone(), or after kick()), flushes events, returns the stats.
  Napi::Value Join(const Napi::CallbackInfo& info) {
    if (machine_ && running_) {
      machine_->Join();
      running_ = false;
      napi_remove_env_cleanup_hook(env_, CleanupHook, this);
      tsfn_.Release();
    }
    return Stats(info);
  }

  Napi::Value Stats(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Napi::Object out = Napi::Object::New(env);
    if (!machine_) return out;
    Napi::Array cpus = Napi::Array::New(env, machine_->vcpus());
    static const char* states[] = {"running", "bye", "halted", "fatal", "error", "kicked"};
    for (int i = 0; i < machine_->vcpus(); i++) {
      VcpuStats& s = machine_->stats(i);
      Napi::Object c = Napi::Object::New(env);
      auto n = [&](const char* k, uint64_t v) { c.Set(k, Napi::Number::New(env, static_cast<double>(v))); };
      n("runs", s.runs);
      n("pio", s.pio);
      n("mmioInRam", s.mmio_in_ram);
      n("mmioOutside", s.mmio_outside);
      n("efault", s.efault);
      n("efaultUnresolved", s.efault_unresolved);
      n("eintr", s.eintr);
      n("eintrSigbus", s.eintr_sigbus);
      n("injected", s.injected);
      n("deferred", s.deferred);
      n("injectFailed", s.inject_failed);
      n("healthy", s.healthy);
      n("recovering", s.recovering);
      n("lost", s.lost);
      n("notRam", s.not_ram);
      n("passes", s.passes);
      n("verified", s.verified);
      n("wrongBytes", s.wrong_bytes);
      n("filled", s.filled);
      n("guestMces", s.guest_mces);
      c.Set("state", states[s.state.load()]);
      c.Set("done", s.done.load());
      {
        std::lock_guard<std::mutex> lock(s.mu);
        if (!s.error.empty()) c.Set("error", s.error);
      }
      cpus.Set(static_cast<uint32_t>(i), c);
    }
    out.Set("vcpus", cpus);
    out.Set("duplicateInjections", Napi::Number::New(env, static_cast<double>(machine_->duplicate_injections())));
    return out;
  }

  Napi::Value Info(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Napi::Object o = Napi::Object::New(env);
    if (!machine_) return o;
    const Vm& vm = machine_->vm();
    o.Set("vendor", vm.amd ? "AuthenticAMD" : "GenuineIntel");
    o.Set("mcgCap", Big(env, vm.mcg_cap));
    for (const auto& e : vm.cpuid) {
      if (e.function == 1) o.Set("cpuid1Edx", Napi::Number::New(env, e.edx));
      if (e.function == 0x80000007) o.Set("cpuid80000007Ebx", Napi::Number::New(env, e.ebx));
    }
    return o;
  }

  std::unique_ptr<Machine> machine_;
  Napi::ThreadSafeFunction tsfn_;
  napi_env env_ = nullptr;
  bool running_ = false;
  std::mutex qmu_;
  std::vector<Event> queue_;
};

Napi::Value InstallSigbusHandler(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  bool engine_first = false;
  bool ok = sigbus::Install(&engine_first);
  Napi::Object o = Napi::Object::New(env);
  o.Set("installed", ok);
  o.Set("anotherHandlerFirst", engine_first);
  return o;
}

Napi::Value SigbusCounters(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  sigbus::Counters c = sigbus::Get();
  Napi::Object o = Napi::Object::New(env);
  o.Set("installed", sigbus::Installed());
  o.Set("current", sigbus::IsCurrentHandler());
  o.Set("total", Napi::Number::New(env, static_cast<double>(c.total)));
  o.Set("otherThread", Napi::Number::New(env, static_cast<double>(c.other_thread)));
  o.Set("nullUcontext", Napi::Number::New(env, static_cast<double>(c.null_ucontext)));
  o.Set("lastCode", c.last_code);
  o.Set("lastLsb", c.last_lsb);
  o.Set("lastAddr", Big(env, c.last_addr));
  return o;
}

// Whether /dev/kvm can be opened here (the tests and the demo skip with this reason otherwise).
Napi::Value KvmAvailable(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
  o.Set("ok", fd >= 0);
  if (fd < 0) o.Set("reason", std::string("/dev/kvm: ") + strerror(errno));
  else close(fd);
  return o;
}

}  // namespace

void RegisterLinux(Napi::Env env, Napi::Object exports);  // linux_addon.cc: the Linux boot mode

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("Vm", VmWrap::Init(env));
  exports.Set("installSigbusHandler", Napi::Function::New(env, InstallSigbusHandler));
  exports.Set("sigbusCounters", Napi::Function::New(env, SigbusCounters));
  exports.Set("kvmAvailable", Napi::Function::New(env, KvmAvailable));
  RegisterLinux(env, exports);
  return exports;
}

}  // namespace ras_vmm

static Napi::Object RasVmmInit(Napi::Env env, Napi::Object exports) { return ras_vmm::Init(env, exports); }

NODE_API_MODULE(ras_vmm, RasVmmInit)
