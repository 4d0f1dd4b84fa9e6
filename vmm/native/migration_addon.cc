#include "migration_addon.h"

#include "dirty_log.h"
#include "napi_util.h"
#include "vcpu_state.h"

namespace ras_vmm::migration {

namespace {

Napi::Value Throw(Napi::Env env, const std::string& what) {
  NAPI_THROW(Napi::Error::New(env, what), env.Undefined());
}

}  // namespace

Napi::Value CompleteExits(const Napi::CallbackInfo& info, Machine* m) {
  Napi::Env env = info.Env();
  if (!m) return Throw(env, "no machine");
  for (int i = 0; i < m->vcpus(); i++) {
    std::string err;
    if (!state::Complete(m->vcpu(i).fd, m->vcpu(i).run, &err)) return Throw(env, "vCPU " + std::to_string(i) + ": " + err);
  }
  return env.Undefined();
}

Napi::Value SaveState(const Napi::CallbackInfo& info, Machine* m) {
  Napi::Env env = info.Env();
  if (!m) return Throw(env, "no machine");
  Napi::Object out = Napi::Object::New(env);
  Napi::Array cpus = Napi::Array::New(env, m->vcpus());
  for (int i = 0; i < m->vcpus(); i++) {
    std::vector<uint8_t> b;
    std::string err;
    if (!state::SaveVcpu(m->vm(), m->vcpu(i).fd, false, &b, &err)) return Throw(env, "vCPU " + std::to_string(i) + ": " + err);
    cpus.Set(static_cast<uint32_t>(i), Napi::Buffer<uint8_t>::Copy(env, b.data(), b.size()));
  }
  std::vector<uint8_t> v;
  std::string err;
  // The bare-metal VM creates no in-kernel irqchip and no PIT: its state is the KVM clock.
  if (!state::SaveVm(m->vm(), false, false, &v, &err)) return Throw(env, err);
  out.Set("vcpus", cpus);
  out.Set("vm", Napi::Buffer<uint8_t>::Copy(env, v.data(), v.size()));
  return out;
}

Napi::Value RestoreState(const Napi::CallbackInfo& info, Machine* m) {
  Napi::Env env = info.Env();
  if (!m) return Throw(env, "no machine");
  if (!info[0].IsObject()) return Throw(env, "restoreState({ vcpus, vm })");
  Napi::Object o = info[0].As<Napi::Object>();
  if (!o.Get("vcpus").IsArray() || !o.Get("vm").IsBuffer()) return Throw(env, "restoreState({ vcpus: Buffer[], vm: Buffer })");
  Napi::Array cpus = o.Get("vcpus").As<Napi::Array>();
  if (cpus.Length() != static_cast<uint32_t>(m->vcpus()))
    return Throw(env, "the stream has " + std::to_string(cpus.Length()) + " vCPUs, this VM " + std::to_string(m->vcpus()));
  std::vector<uint32_t> failed;
  std::string err;
  std::vector<uint8_t> v = Bytes(o.Get("vm"));
  if (!state::RestoreVm(m->vm(), v.data(), v.size(), &err)) return Throw(env, err);
  for (uint32_t i = 0; i < cpus.Length(); i++) {
    std::vector<uint8_t> b = Bytes(cpus.Get(i));
    if (!state::RestoreVcpu(m->vm(), m->vcpu(static_cast<int>(i)).fd, false, b.data(), b.size(), &failed, &err))
      return Throw(env, "vCPU " + std::to_string(i) + ": " + err);
  }
  Napi::Object out = Napi::Object::New(env);
  Napi::Array f = Napi::Array::New(env, failed.size());
  for (size_t k = 0; k < failed.size(); k++) f.Set(static_cast<uint32_t>(k), Napi::Number::New(env, failed[k]));
  out.Set("msrFailed", f);
  return out;
}

Napi::Value SetDirtyLog(const Napi::CallbackInfo& info, Machine* m) {
  Napi::Env env = info.Env();
  if (!m) return Throw(env, "no machine");
  if (!dirty::Enable(m->mutable_vm(), info[0].ToBoolean().Value())) return Throw(env, m->error());
  return env.Undefined();
}

Napi::Value TakeDirty(const Napi::CallbackInfo& info, Machine* m) {
  Napi::Env env = info.Env();
  if (!m) return Throw(env, "no machine");
  Vm* vm = m->mutable_vm();
  Napi::Array out = Napi::Array::New(env, vm->slots.size());
  for (uint32_t s = 0; s < vm->slots.size(); s++) {
    std::vector<uint64_t> bm;
    if (!dirty::Get(vm, s, &bm)) return Throw(env, vm->error);
    out.Set(s, Napi::Buffer<uint8_t>::Copy(env, reinterpret_cast<const uint8_t*>(bm.data()), bm.size() * 8));
  }
  return out;
}

}  // namespace ras_vmm::migration
