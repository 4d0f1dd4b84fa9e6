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

Target Of(Machine* m) {
  Target t;
  if (!m) return t;
  t.vm = m->mutable_vm();
  for (int i = 0; i < m->vcpus(); i++) t.vcpus.push_back(&m->vcpu(i));
  return t;
}

Napi::Value CompleteExits(const Napi::CallbackInfo& info, const Target* t) {
  Napi::Env env = info.Env();
  if (!t) return Throw(env, "no machine");
  for (size_t i = 0; i < t->vcpus.size(); i++) {
    std::string err;
    if (!state::Complete(t->vcpus[i]->fd, t->vcpus[i]->run, &err)) return Throw(env, "vCPU " + std::to_string(i) + ": " + err);
  }
  return env.Undefined();
}

Napi::Value SaveState(const Napi::CallbackInfo& info, const Target* t) {
  Napi::Env env = info.Env();
  if (!t) return Throw(env, "no machine");
  Napi::Object out = Napi::Object::New(env);
  Napi::Array cpus = Napi::Array::New(env, t->vcpus.size());
  for (size_t i = 0; i < t->vcpus.size(); i++) {
    std::vector<uint8_t> b;
    std::string err;
    if (!state::SaveVcpu(*t->vm, t->vcpus[i]->fd, t->irqchip, &b, &err)) return Throw(env, "vCPU " + std::to_string(i) + ": " + err);
    cpus.Set(static_cast<uint32_t>(i), Napi::Buffer<uint8_t>::Copy(env, b.data(), b.size()));
  }
  std::vector<uint8_t> v;
  std::string err;
  if (!state::SaveVm(*t->vm, t->irqchip, t->pit, &v, &err)) return Throw(env, err);
  if (t->save_devices) t->save_devices(&v);
  out.Set("vcpus", cpus);
  out.Set("vm", Napi::Buffer<uint8_t>::Copy(env, v.data(), v.size()));
  return out;
}

Napi::Value RestoreState(const Napi::CallbackInfo& info, const Target* t) {
  Napi::Env env = info.Env();
  if (!t) return Throw(env, "no machine");
  if (!info[0].IsObject()) return Throw(env, "restoreState({ vcpus, vm })");
  Napi::Object o = info[0].As<Napi::Object>();
  if (!o.Get("vcpus").IsArray() || !o.Get("vm").IsBuffer()) return Throw(env, "restoreState({ vcpus: Buffer[], vm: Buffer })");
  Napi::Array cpus = o.Get("vcpus").As<Napi::Array>();
  if (cpus.Length() != t->vcpus.size())
    return Throw(env, "the stream has " + std::to_string(cpus.Length()) + " vCPUs, this VM " + std::to_string(t->vcpus.size()));
  std::vector<uint32_t> failed;
  std::string err;
  std::vector<uint8_t> v = Bytes(o.Get("vm"));
  if (!state::RestoreVm(*t->vm, v.data(), v.size(), &err)) return Throw(env, err);
  if (t->restore_devices && !t->restore_devices(v.data(), v.size(), &err)) return Throw(env, err);
  for (uint32_t i = 0; i < cpus.Length(); i++) {
    std::vector<uint8_t> b = Bytes(cpus.Get(i));
    if (!state::RestoreVcpu(*t->vm, t->vcpus[i]->fd, t->irqchip, b.data(), b.size(), &failed, &err))
      return Throw(env, "vCPU " + std::to_string(i) + ": " + err);
  }
  Napi::Object out = Napi::Object::New(env);
  Napi::Array f = Napi::Array::New(env, failed.size());
  for (size_t k = 0; k < failed.size(); k++) f.Set(static_cast<uint32_t>(k), Napi::Number::New(env, failed[k]));
  out.Set("msrFailed", f);
  return out;
}

Napi::Value SetDirtyLog(const Napi::CallbackInfo& info, const Target* t) {
  Napi::Env env = info.Env();
  if (!t) return Throw(env, "no machine");
  if (!dirty::Enable(t->vm, info[0].ToBoolean().Value())) return Throw(env, t->vm->error);
  return env.Undefined();
}

Napi::Value TakeDirty(const Napi::CallbackInfo& info, const Target* t) {
  Napi::Env env = info.Env();
  if (!t) return Throw(env, "no machine");
  Vm* vm = t->vm;
  Napi::Array out = Napi::Array::New(env, vm->slots.size());
  for (uint32_t s = 0; s < vm->slots.size(); s++) {
    std::vector<uint64_t> bm;
    if (!dirty::Get(vm, s, &bm)) return Throw(env, vm->error);
    out.Set(s, Napi::Buffer<uint8_t>::Copy(env, reinterpret_cast<const uint8_t*>(bm.data()), bm.size() * 8));
  }
  return out;
}

}  // namespace ras_vmm::migration
