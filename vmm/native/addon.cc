// addon.cc: the JavaScript face of the reference VMM's native module (ras_vmm.node). Thin: it
// converts arguments and hands the machine to a MachineHost (napi_util.h), which carries vCPU events
// to JS and stops the vCPU threads from an environment cleanup hook. The KVM work is in kvm_vm,
// vcpu_machine, vcpu_loop, vcpu_memory and mce.
#include <napi.h>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <string.h>
#include <unistd.h>

#include <memory>
#include <mutex>
#include <vector>

#include "migration_addon.h"
#include "napi_util.h"
#include "sigbus.h"
#include "vcpu_loop.h"

namespace ras_vmm {

namespace {

class VmWrap : public Napi::ObjectWrap<VmWrap> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "Vm",
                       {InstanceMethod("start", &VmWrap::Start), InstanceMethod("requestStop", &VmWrap::RequestStop),
                        InstanceMethod("kick", &VmWrap::Kick), InstanceMethod("allDone", &VmWrap::AllDone),
                        InstanceMethod("join", &VmWrap::Join), InstanceMethod("stats", &VmWrap::Stats),
                        InstanceMethod("info", &VmWrap::Info), InstanceMethod("dispose", &VmWrap::Dispose),
                        InstanceMethod("pause", &VmWrap::Pause), InstanceMethod("resume", &VmWrap::Resume),
                        InstanceMethod("saveState", &VmWrap::SaveState), InstanceMethod("restoreState", &VmWrap::RestoreState),
                        InstanceMethod("dirtyLog", &VmWrap::DirtyLog), InstanceMethod("takeDirty", &VmWrap::TakeDirty)});
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
    if (o.Has("mcTouchGpa") && !o.Get("mcTouchGpa").IsUndefined()) cfg.mc_touch = U64(o.Get("mcTouchGpa"), "mcTouchGpa");
    if (o.Has("probeGpa") && !o.Get("probeGpa").IsUndefined()) cfg.probe = U64(o.Get("probeGpa"), "probeGpa");
    cfg.unmap_lost = o.Has("unmapLost") && o.Get("unmapLost").ToBoolean().Value();
    cfg.restore = o.Has("restore") && o.Get("restore").ToBoolean().Value();
    if (env.IsExceptionPending()) return;
    if (!ApiTable(env, api, &cfg.api)) return;
    std::vector<Slot> slots = Slots(o);
    Napi::Array ra = o.Get("ranges").As<Napi::Array>();
    for (uint32_t k = 0; k < ra.Length(); k++) {
      Napi::Object r = ra.Get(k).As<Napi::Object>();
      cfg.ranges.push_back({U64(r.Get("gpa"), "range gpa"), U64(r.Get("size"), "range size")});
    }
    if (env.IsExceptionPending()) return;
    Napi::Buffer<uint8_t> img = o.Get("image").As<Napi::Buffer<uint8_t>>();
    std::vector<uint8_t> image(img.Data(), img.Data() + img.Length());
    host_.machine = std::make_unique<Machine>();
    if (!host_.machine->Create(cfg, slots, image)) {
      Napi::Error::New(env, "KVM: " + host_.machine->error()).ThrowAsJavaScriptException();
      host_.machine.reset();
    }
  }

 private:
  Napi::Value Start(const Napi::CallbackInfo& info) { return host_.Start(info, "ras_vmm events"); }
  Napi::Value RequestStop(const Napi::CallbackInfo& info) { return host_.RequestStop(info); }
  Napi::Value Kick(const Napi::CallbackInfo& info) { return host_.Kick(info); }
  Napi::Value Dispose(const Napi::CallbackInfo& info) { return host_.Dispose(info); }
  // Migration (migration_addon.h): pause = kick, join, complete the last exits; resume = start again.
  Napi::Value Pause(const Napi::CallbackInfo& info) {
    host_.Shutdown();
    return migration::CompleteExits(info, host_.machine.get());
  }
  Napi::Value Resume(const Napi::CallbackInfo& info) {
    if (host_.machine && !host_.running()) host_.machine->PrepareRestart();
    return host_.Start(info, "ras_vmm events");
  }
  Napi::Value SaveState(const Napi::CallbackInfo& info) { return migration::SaveState(info, host_.machine.get()); }
  Napi::Value RestoreState(const Napi::CallbackInfo& info) { return migration::RestoreState(info, host_.machine.get()); }
  Napi::Value DirtyLog(const Napi::CallbackInfo& info) { return migration::SetDirtyLog(info, host_.machine.get()); }
  Napi::Value TakeDirty(const Napi::CallbackInfo& info) { return migration::TakeDirty(info, host_.machine.get()); }
  Napi::Value AllDone(const Napi::CallbackInfo& info) {
    return Napi::Boolean::New(info.Env(), !host_.machine || !host_.running() || host_.machine->AllDone());
  }

  // Joins the threads (call when allDone(), or after kick()), flushes events, returns the stats.
  Napi::Value Join(const Napi::CallbackInfo& info) {
    host_.Join();
    return Stats(info);
  }

  Napi::Value Stats(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Napi::Object out = Napi::Object::New(env);
    Machine* m = host_.machine.get();
    if (!m) return out;
    Napi::Array cpus = Napi::Array::New(env, m->vcpus());
    static const char* states[] = {"running", "bye", "halted", "fatal", "error", "kicked"};
    for (int i = 0; i < m->vcpus(); i++) {
      VcpuStats& s = m->stats(i);
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
      n("injectedAo", s.injected_ao);
      n("broadcastPieces", s.pieces);
      n("merged", s.merged);
      n("disabled", s.disabled);
      n("shutdown", s.shutdown);
      n("mmioRewound", s.mmio_rewound);
      n("hwpoison", s.hwpoison);
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
    out.Set("duplicateInjections", Napi::Number::New(env, static_cast<double>(m->duplicate_injections())));
    return out;
  }

  Napi::Value Info(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Napi::Object o = Napi::Object::New(env);
    if (!host_.machine) return o;
    const Vm& vm = host_.machine->vm();
    o.Set("vendor", vm.amd ? "AuthenticAMD" : "GenuineIntel");
    o.Set("mcgCap", Big(env, vm.mcg_cap));
    for (const auto& e : vm.cpuid) {
      if (e.function == 1) o.Set("cpuid1Edx", Napi::Number::New(env, e.edx));
      if (e.function == 0x80000007) o.Set("cpuid80000007Ebx", Napi::Number::New(env, e.ebx));
    }
    return o;
  }

  MachineHost<Machine> host_;
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
  o.Set("outsideRun", Napi::Number::New(env, static_cast<double>(c.outside_run)));
  o.Set("lastCode", c.last_code);
  o.Set("lastLsb", c.last_lsb);
  o.Set("lastAddr", Big(env, c.last_addr));
  return o;
}

// memLock(hva, size, 'on' | 'on-fault'): locks guest RAM as QEMU's -overcommit mem-lock=on|on-fault
// does for its RAM blocks: mlock(), or mlock2(MLOCK_ONFAULT) (pages locked as they are touched).
Napi::Value MemLock(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint64_t hva = U64(info[0], "hva");
  uint64_t size = U64(info[1], "size");
  if (env.IsExceptionPending()) return env.Undefined();
  std::string mode = info[2].ToString().Utf8Value();
  int rc;
  if (mode == "on") rc = mlock(reinterpret_cast<void*>(hva), size);
  else if (mode == "on-fault") rc = static_cast<int>(syscall(SYS_mlock2, hva, size, 1 /* MLOCK_ONFAULT */));
  else NAPI_THROW(Napi::TypeError::New(env, "memLock mode must be 'on' or 'on-fault'"), env.Undefined());
  if (rc != 0) {
    int e = errno;
    Napi::Error err = Napi::Error::New(env, std::string(mode == "on" ? "mlock" : "mlock2(MLOCK_ONFAULT)") + ": " + strerror(e));
    err.Set("errno", Napi::Number::New(env, e));
    err.Set("syscall", mode == "on" ? "mlock" : "mlock2");
    NAPI_THROW(err, env.Undefined());
  }
  return env.Undefined();
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

void RegisterLinux(Napi::Env env, Napi::Object exports);    // linux_addon.cc: the Linux boot mode
void RegisterTesting(Napi::Env env, Napi::Object exports);  // testing_addon.cc: host tests without KVM

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("Vm", VmWrap::Init(env));
  exports.Set("installSigbusHandler", Napi::Function::New(env, InstallSigbusHandler));
  exports.Set("sigbusCounters", Napi::Function::New(env, SigbusCounters));
  exports.Set("kvmAvailable", Napi::Function::New(env, KvmAvailable));
  exports.Set("memLock", Napi::Function::New(env, MemLock));
  RegisterLinux(env, exports);
  RegisterTesting(env, exports);
  return exports;
}

}  // namespace ras_vmm

static Napi::Object RasVmmInit(Napi::Env env, Napi::Object exports) { return ras_vmm::Init(env, exports); }

NODE_API_MODULE(ras_vmm, RasVmmInit)
