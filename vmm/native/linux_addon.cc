// linux_addon: the JavaScript face of the reference VMM's Linux mode (class LinuxVm in ras_vmm.node).
#include <napi.h>

#include <memory>
#include <mutex>
#include <vector>

#include "linux_vm.h"
#include "migration_addon.h"
#include "napi_util.h"

namespace ras_vmm {

namespace {

const char* kStates[] = {"running", "reset", "triple-fault", "error", "kicked"};

class LinuxVmWrap : public Napi::ObjectWrap<LinuxVmWrap> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "LinuxVm",
                       {InstanceMethod("start", &LinuxVmWrap::Start), InstanceMethod("requestStop", &LinuxVmWrap::RequestStop),
                        InstanceMethod("injectMce", &LinuxVmWrap::InjectMce), InstanceMethod("kick", &LinuxVmWrap::Kick),
                        InstanceMethod("done", &LinuxVmWrap::Done), InstanceMethod("join", &LinuxVmWrap::Join),
                        InstanceMethod("stats", &LinuxVmWrap::Stats), InstanceMethod("info", &LinuxVmWrap::Info), InstanceMethod("dispose", &LinuxVmWrap::Dispose),
                        InstanceMethod("pause", &LinuxVmWrap::Pause), InstanceMethod("resume", &LinuxVmWrap::Resume),
                        InstanceMethod("saveState", &LinuxVmWrap::SaveState), InstanceMethod("restoreState", &LinuxVmWrap::RestoreState),
                        InstanceMethod("dirtyLog", &LinuxVmWrap::DirtyLog), InstanceMethod("takeDirty", &LinuxVmWrap::TakeDirty)});
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
    if (o.Has("vcpus") && o.Get("vcpus").IsNumber()) cfg.vcpus = o.Get("vcpus").As<Napi::Number>().Int32Value();
    if (env.IsExceptionPending()) return;
    if (!ApiTable(env, api, &cfg.api)) return;
    std::vector<Slot> slots = Slots(o);
    if (env.IsExceptionPending()) return;
    cfg.restore = o.Has("restore") && o.Get("restore").ToBoolean().Value();
    cfg.image.kernel = Bytes(o.Get("kernel"));
    cfg.image.initrd = Bytes(o.Get("initrd"));
    cfg.image.cmdline = o.Get("cmdline").ToString().Utf8Value();
    if (o.Has("entry64")) cfg.image.entry64 = o.Get("entry64").ToBoolean().Value();
    host_.machine = std::make_unique<LinuxMachine>();
    if (!host_.machine->Create(cfg, slots)) {
      Napi::Error::New(env, "KVM: " + host_.machine->error()).ThrowAsJavaScriptException();
      host_.machine.reset();
    }
  }

 private:
  Napi::Value Start(const Napi::CallbackInfo& info) { return host_.Start(info, "ras_vmm linux events"); }
  Napi::Value RequestStop(const Napi::CallbackInfo& info) { return host_.RequestStop(info); }
  Napi::Value InjectMce(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    uint64_t gpa = U64(info[0], "gpa");
    if (env.IsExceptionPending()) return env.Undefined();
    bool ar = info[1].ToBoolean().Value();
    if (host_.machine && host_.running()) host_.machine->QueueMce(gpa, ar);
    return env.Undefined();
  }
  Napi::Value Kick(const Napi::CallbackInfo& info) { return host_.Kick(info); }
  // Migration (migration_addon.h), as the bare-metal Vm: pause = kick, join, complete the last
  // exits; resume = start again. The state adds the LAPIC, PIC, IOAPIC, PIT and the devices.
  migration::Target Target() {
    migration::Target t;
    LinuxMachine* m = host_.machine.get();
    t.vm = m->mutable_vm();
    for (int i = 0; i < m->vcpus(); i++) t.vcpus.push_back(&m->vcpu(i));
    t.irqchip = t.pit = true;
    t.save_devices = [m](std::vector<uint8_t>* out) { m->SaveDevices(out); };
    t.restore_devices = [m](const uint8_t* d, size_t n, std::string* err) { return m->RestoreDevices(d, n, err); };
    return t;
  }
  template <class F>
  Napi::Value WithTarget(const Napi::CallbackInfo& info, F f) {
    if (!host_.machine) return f(info, static_cast<const migration::Target*>(nullptr));
    migration::Target t = Target();
    return f(info, &t);
  }
  Napi::Value Pause(const Napi::CallbackInfo& info) {
    host_.Shutdown();
    return WithTarget(info, [](const Napi::CallbackInfo& i, const migration::Target* t) { return migration::CompleteExits(i, t); });
  }
  Napi::Value Resume(const Napi::CallbackInfo& info) {
    if (host_.machine && !host_.running()) host_.machine->PrepareRestart();
    return host_.Start(info, "ras_vmm linux events");
  }
  Napi::Value SaveState(const Napi::CallbackInfo& info) {
    return WithTarget(info, [](const Napi::CallbackInfo& i, const migration::Target* t) { return migration::SaveState(i, t); });
  }
  Napi::Value RestoreState(const Napi::CallbackInfo& info) {
    return WithTarget(info, [](const Napi::CallbackInfo& i, const migration::Target* t) { return migration::RestoreState(i, t); });
  }
  Napi::Value DirtyLog(const Napi::CallbackInfo& info) {
    return WithTarget(info, [](const Napi::CallbackInfo& i, const migration::Target* t) { return migration::SetDirtyLog(i, t); });
  }
  Napi::Value TakeDirty(const Napi::CallbackInfo& info) {
    return WithTarget(info, [](const Napi::CallbackInfo& i, const migration::Target* t) { return migration::TakeDirty(i, t); });
  }
  Napi::Value Dispose(const Napi::CallbackInfo& info) { return host_.Dispose(info); }
  Napi::Value Done(const Napi::CallbackInfo& info) {
    return Napi::Boolean::New(info.Env(), !host_.machine || !host_.running() || host_.machine->Done());
  }
  Napi::Value Join(const Napi::CallbackInfo& info) {
    host_.Join();
    return Stats(info);
  }

  Napi::Value Stats(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Napi::Object c = Napi::Object::New(env);
    if (!host_.machine) return c;
    LinuxStats& s = host_.machine->stats();
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
    n("broadcastPieces", s.pieces);
    n("merged", s.merged);
    n("disabled", s.disabled);
    n("shutdown", s.shutdown);
    n("hwpoison", s.hwpoison);
    n("vcpusEntered", s.vcpus_entered);
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
    if (!host_.machine) return o;
    const Vm& vm = host_.machine->vm();
    const linux_boot::Loaded& l = host_.machine->loaded();
    o.Set("vendor", vm.amd ? "AuthenticAMD" : "GenuineIntel");
    o.Set("mcgCap", Napi::BigInt::New(env, vm.mcg_cap));
    o.Set("vcpus", Napi::Number::New(env, host_.machine->vcpus()));
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

  MachineHost<LinuxMachine> host_;
};

}  // namespace

void RegisterLinux(Napi::Env env, Napi::Object exports) { exports.Set("LinuxVm", LinuxVmWrap::Init(env)); }

}  // namespace ras_vmm
