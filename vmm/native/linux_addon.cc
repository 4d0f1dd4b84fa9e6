// linux_addon: the JavaScript face of the reference VMM's Linux mode (class LinuxVm in ras_vmm.node).
#include <napi.h>

#include <memory>
#include <mutex>
#include <vector>

#include "linux_vm.h"

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

std::vector<uint8_t> Bytes(const Napi::Value& v) {
  if (!v.IsBuffer()) return {};
  auto b = v.As<Napi::Buffer<uint8_t>>();
  return std::vector<uint8_t>(b.Data(), b.Data() + b.Length());
}

const char* kStates[] = {"running", "reset", "triple-fault", "error", "kicked"};

class LinuxVmWrap : public Napi::ObjectWrap<LinuxVmWrap> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "LinuxVm",
                       {InstanceMethod("start", &LinuxVmWrap::Start), InstanceMethod("requestStop", &LinuxVmWrap::RequestStop),
                        InstanceMethod("injectMce", &LinuxVmWrap::InjectMce), InstanceMethod("kick", &LinuxVmWrap::Kick),
                        InstanceMethod("done", &LinuxVmWrap::Done), InstanceMethod("join", &LinuxVmWrap::Join),
                        InstanceMethod("stats", &LinuxVmWrap::Stats), InstanceMethod("info", &LinuxVmWrap::Info)});
  }

  explicit LinuxVmWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<LinuxVmWrap>(info) {
    Napi::Env env = info.Env();
    if (!info[0].IsObject()) {
      Napi::TypeError::New(env, "options must be an object").ThrowAsJavaScriptException();
      return;
    }
    Napi::Object o = info[0].As<Napi::Object>();
    LinuxConfig cfg;
    uint64_t api = U64(o.Get("api"), "api");
    if (o.Has("waitMs") && o.Get("waitMs").IsNumber()) cfg.wait_ms = o.Get("waitMs").As<Napi::Number>().Int32Value();
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
    if (env.IsExceptionPending()) return;
    cfg.image.kernel = Bytes(o.Get("kernel"));
    cfg.image.initrd = Bytes(o.Get("initrd"));
    cfg.image.cmdline = o.Get("cmdline").ToString().Utf8Value();
    if (o.Has("entry64")) cfg.image.entry64 = o.Get("entry64").ToBoolean().Value();
    machine_ = std::make_unique<LinuxMachine>();
    if (!machine_->Create(cfg, slots)) {
      Napi::Error::New(env, "KVM: " + machine_->error()).ThrowAsJavaScriptException();
      machine_.reset();
    }
  }

  ~LinuxVmWrap() override { Shutdown(); }

 private:
  static void CleanupHook(void* arg) { static_cast<LinuxVmWrap*>(arg)->Shutdown(); }

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
    tsfn_ = Napi::ThreadSafeFunction::New(env, info[0].As<Napi::Function>(), "ras_vmm linux events", 0, 1);
    running_ = true;
    napi_add_env_cleanup_hook(env, CleanupHook, this);
    machine_->Start([this](Event&& e) {
      bool first;
      {
        std::lock_guard<std::mutex> lock(qmu_);
        first = queue_.empty();
        queue_.push_back(std::move(e));
      }
      if (first) tsfn_.NonBlockingCall(this, [](Napi::Env env, Napi::Function cb, LinuxVmWrap* self) { self->Deliver(env, cb); });
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
      for (uint32_t j = 0; j < 8; j++) v.Set(j, Napi::BigInt::New(env, e.v[j]));
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
  Napi::Value InjectMce(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    uint64_t gpa = U64(info[0], "gpa");
    if (env.IsExceptionPending()) return env.Undefined();
    bool ar = info[1].ToBoolean().Value();
    if (machine_ && running_) machine_->QueueMce(gpa, ar);
    return env.Undefined();
  }
  Napi::Value Kick(const Napi::CallbackInfo& info) {
    if (machine_ && running_) machine_->Kick();
    return info.Env().Undefined();
  }
  Napi::Value Done(const Napi::CallbackInfo& info) {
    return Napi::Boolean::New(info.Env(), !machine_ || !running_ || machine_->Done());
  }
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
    Napi::Object c = Napi::Object::New(env);
    if (!machine_) return c;
    LinuxStats& s = machine_->stats();
    auto n = [&](const char* k, uint64_t v) { c.Set(k, Napi::Number::New(env, static_cast<double>(v))); };
    n("runs", s.runs);
    n("pio", s.pio);
    n("pioOther", s.pio_other);
    n("mmioInRam", s.mmio_in_ram);
    n("mmioRewound", s.mmio_rewound);
    n("mmioOutside", s.mmio_outside);
    n("efault", s.efault);
    n("efaultUnresolved", s.efault_unresolved);
    n("eintr", s.eintr);
    n("eintrSigbus", s.eintr_sigbus);
    n("injected", s.injected);
    n("injectedAo", s.injected_ao);
    n("deferred", s.deferred);
    n("injectFailed", s.inject_failed);
    n("duplicate", s.duplicate);
    n("healthy", s.healthy);
    n("recovering", s.recovering);
    n("lost", s.lost);
    n("notRam", s.not_ram);
    n("consoleBytes", s.console_bytes);
    n("controlReads", s.control_reads);
    c.Set("state", kStates[s.state.load()]);
    c.Set("done", s.done.load());
    {
      std::lock_guard<std::mutex> lock(s.mu);
      if (!s.error.empty()) c.Set("error", s.error);
    }
    return c;
  }

  Napi::Value Info(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Napi::Object o = Napi::Object::New(env);
    if (!machine_) return o;
    const Vm& vm = machine_->vm();
    const linux_boot::Loaded& l = machine_->loaded();
    o.Set("vendor", vm.amd ? "AuthenticAMD" : "GenuineIntel");
    o.Set("mcgCap", Napi::BigInt::New(env, vm.mcg_cap));
    o.Set("bootProtocol", Napi::Number::New(env, l.protocol));
    o.Set("entry", Napi::BigInt::New(env, l.entry));
    o.Set("entry64", Napi::Boolean::New(env, l.entry64));
    o.Set("initrdGpa", Napi::BigInt::New(env, l.initrd_gpa));
    o.Set("initrdSize", Napi::Number::New(env, static_cast<double>(l.initrd_size)));
    o.Set("kernelSize", Napi::Number::New(env, static_cast<double>(l.kernel_size)));
    Napi::Array ram = Napi::Array::New(env, l.e820_ram.size());
    for (size_t k = 0; k < l.e820_ram.size(); k++) {
      Napi::Object r = Napi::Object::New(env);
      r.Set("gpa", Napi::BigInt::New(env, l.e820_ram[k].first));
      r.Set("size", Napi::Number::New(env, static_cast<double>(l.e820_ram[k].second)));
      ram.Set(static_cast<uint32_t>(k), r);
    }
    o.Set("e820Ram", ram);
    return o;
  }

  std::unique_ptr<LinuxMachine> machine_;
  Napi::ThreadSafeFunction tsfn_;
  napi_env env_ = nullptr;
  bool running_ = false;
  std::mutex qmu_;
  std::vector<Event> queue_;
};

}  // namespace

void RegisterLinux(Napi::Env env, Napi::Object exports) { exports.Set("LinuxVm", LinuxVmWrap::Init(env)); }

}  // namespace ras_vmm
