// testing_mce: the machine-check half of ras_vmm.node's `testing` object, for host tests without
// /dev/kvm: mce::Plan for given MSRs (planMce), and the Delivery every machine uses, driven step by
// step against a model of KVM's KVM_X86_SET_MCE (simulateDelivery).
#include <napi.h>

#include <errno.h>

#include <cstring>
#include <vector>

#include "mce_delivery.h"
#include "napi_util.h"

namespace ras_vmm {

namespace {

mce::Model ModelArg(const Napi::Object& o) {
  mce::Model m;
  m.amd = o.Get("amd").ToBoolean().Value();
  m.broadcast = o.Get("broadcast").ToBoolean().Value();
  return m;
}

uint64_t U64Or(const Napi::Object& o, const char* k, uint64_t dflt) {
  return o.Has(k) && !o.Get(k).IsUndefined() ? U64(o.Get(k), k) : dflt;
}

// A vCPU's machine-check MSRs as KVM keeps them (arch.mcg_status, mcg_ctl, mcg_ext_ctl, banks).
struct KvmVcpu {
  mce::Msrs m;
  uint64_t addr[mce::kBanks] = {}, misc[mce::kBanks] = {};
  bool cr4_mce = true;
  bool triple_fault = false;
  int mc_queued = 0;
};

// kvm_vcpu_ioctl_x86_set_mce (arch/x86/kvm/x86.c, 6.12), minus UCNA.
int ModelSetMce(KvmVcpu* v, uint64_t mcg_cap, const mce::Injection& in) {
  if (in.bank >= static_cast<int>(mcg_cap & 0xff) || !(in.status & mce::MCI_STATUS_VAL)) return EINVAL;
  uint64_t status = in.status;
  int b = in.bank;
  bool uc = status & mce::MCI_STATUS_UC;
  if (uc && (mcg_cap & mce::MCG_CTL_P) && v->m.mcg_ctl != ~0ull) return 0;
  if (uc && v->m.ctl[b] != ~0ull) return 0;
  if (uc) {
    if ((v->m.mcg_status & mce::MCG_STATUS_MCIP) || !v->cr4_mce) {
      v->triple_fault = true;
      return 0;
    }
    if (v->m.status[b] & mce::MCI_STATUS_VAL) status |= mce::MCI_STATUS_OVER;
    v->addr[b] = in.addr;
    v->misc[b] = in.misc;
    v->m.mcg_status = in.mcg_status;
    v->m.status[b] = status;
    v->mc_queued++;
  } else if (!(v->m.status[b] & mce::MCI_STATUS_VAL) || !(v->m.status[b] & mce::MCI_STATUS_UC)) {
    if (v->m.status[b] & mce::MCI_STATUS_VAL) status |= mce::MCI_STATUS_OVER;
    v->addr[b] = in.addr;
    v->misc[b] = in.misc;
    v->m.status[b] = status;
  } else {
    v->m.status[b] |= mce::MCI_STATUS_OVER;
  }
  return 0;
}

const char* VerdictName(int v) {
  static const char* n[] = {"inject", "defer", "disabled", "shutdown", "merged"};
  return v >= 0 && v <= 4 ? n[v] : "?";
}

Napi::Object DecisionObj(Napi::Env env, const mce::Decision& d) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("verdict", VerdictName(d.verdict));
  o.Set("bank", d.inj.bank);
  o.Set("status", Big(env, d.inj.status));
  o.Set("addr", Big(env, d.inj.addr));
  o.Set("misc", Big(env, d.inj.misc));
  o.Set("mcgStatus", Big(env, d.inj.mcg_status));
  o.Set("broadcast", d.broadcast);
  o.Set("lmce", d.lmce);
  o.Set("over", d.over);
  return o;
}

void ReadMsrs(const Napi::Object& o, mce::Msrs* m) {
  m->ok = !o.Has("ok") || o.Get("ok").ToBoolean().Value();
  m->mcg_status = U64Or(o, "mcgStatus", 0);
  m->mcg_ctl = U64Or(o, "mcgCtl", ~0ull);
  m->ext_ctl = U64Or(o, "extCtl", 0);
  for (int b = 0; b < mce::kBanks; b++) {
    m->ctl[b] = ~0ull;
    m->status[b] = 0;
  }
  if (o.Has("ctl")) {
    Napi::Object c = o.Get("ctl").As<Napi::Object>();
    for (int b = 0; b < mce::kBanks; b++)
      if (c.Has(static_cast<uint32_t>(b))) m->ctl[b] = U64(c.Get(static_cast<uint32_t>(b)), "ctl");
  }
  if (o.Has("status")) {
    Napi::Object c = o.Get("status").As<Napi::Object>();
    for (int b = 0; b < mce::kBanks; b++)
      if (c.Has(static_cast<uint32_t>(b))) m->status[b] = U64(c.Get(static_cast<uint32_t>(b)), "status");
  }
}

// planMce(model, mcgCap, msrs, ar, gpa): mce::Plan.
Napi::Value PlanMce(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  mce::Msrs m;
  ReadMsrs(info[2].As<Napi::Object>(), &m);
  mce::Decision d = mce::Plan(ModelArg(info[0].As<Napi::Object>()), U64(info[1], "mcgCap"), m, info[3].ToBoolean().Value(), U64(info[4], "gpa"));
  if (env.IsExceptionPending()) return env.Undefined();
  return DecisionObj(env, d);
}

// simulateDelivery({ model, mcgCap, vcpus, msrs?: [per vCPU], steps: [...] }): the Delivery every
// machine uses, against the KVM model, one step at a time as the vCPU threads would run them:
// { deliver: vcpu, gpa, ar } | { firstAo: vcpu, gpa } (a next_lost frame) | { beforeRun: vcpu } |
// { guestDone: vcpu } (its #MC handler read and cleared every bank and MCIP). Returns each vCPU's MSRs, the outcomes and kicks.
Napi::Value SimulateDelivery(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = info[0].As<Napi::Object>();
  mce::Model model = ModelArg(o.Get("model").As<Napi::Object>());
  uint64_t cap = U64(o.Get("mcgCap"), "mcgCap");
  int n = o.Get("vcpus").As<Napi::Number>().Int32Value();
  std::vector<KvmVcpu> v(n);
  if (o.Has("msrs")) {
    Napi::Array a = o.Get("msrs").As<Napi::Array>();
    for (int k = 0; k < n && k < static_cast<int>(a.Length()); k++) ReadMsrs(a.Get(k).As<Napi::Object>(), &v[k].m);
  } else {
    for (auto& x : v) ReadMsrs(Napi::Object::New(env), &x.m);
  }
  for (auto& x : v) x.m.ok = true;
  Napi::Array outcomes = Napi::Array::New(env);
  Napi::Array kicks = Napi::Array::New(env);
  Delivery d;
  MceOps ops;
  ops.read = [&](int fd, uint64_t) { return v[fd].m; };
  ops.put = [&](int fd, const mce::Injection& in) { return ModelSetMce(&v[fd], cap, in); };
  d.Init(
      model, cap, n, [&](int k) { kicks.Set(kicks.Length(), k); },
      [&](int k, const Outcome& oc) {
        Napi::Object x = DecisionObj(env, oc.d);
        x.Set("vcpu", k);
        x.Set("gpa", Big(env, oc.gpa));
        x.Set("ar", oc.ar);
        x.Set("piece", oc.piece);
        x.Set("err", oc.err);
        outcomes.Set(outcomes.Length(), x);
      },
      ops);
  Napi::Array steps = o.Get("steps").As<Napi::Array>();
  for (uint32_t s = 0; s < steps.Length(); s++) {
    Napi::Object st = steps.Get(s).As<Napi::Object>();
    if (st.Has("deliver")) {
      int k = st.Get("deliver").As<Napi::Number>().Int32Value();
      d.Deliver(k, k, U64(st.Get("gpa"), "gpa"), st.Get("ar").ToBoolean().Value(), 0, 0, 0);
    } else if (st.Has("firstAo")) {  // what DrainNextLost does with a frame of its cursor
      int k = st.Get("firstAo").As<Napi::Number>().Int32Value();
      uint64_t gpa = U64(st.Get("gpa"), "gpa");
      if (d.FirstAo(gpa)) d.Deliver(k, k, gpa, false, 0, 5, 0);
    } else if (st.Has("beforeRun")) {
      int k = st.Get("beforeRun").As<Napi::Number>().Int32Value();
      d.BeforeRun(k, k);
    } else if (st.Has("guestDone")) {
      KvmVcpu& x = v[st.Get("guestDone").As<Napi::Number>().Int32Value()];
      for (int b = 0; b < mce::kBanks; b++) x.m.status[b] = 0;
      x.m.mcg_status = 0;
    }
    if (env.IsExceptionPending()) return env.Undefined();
  }
  Napi::Array cpus = Napi::Array::New(env, n);
  for (int k = 0; k < n; k++) {
    Napi::Object c = Napi::Object::New(env);
    c.Set("mcgStatus", Big(env, v[k].m.mcg_status));
    c.Set("tripleFault", v[k].triple_fault);
    c.Set("mcQueued", v[k].mc_queued);
    c.Set("deferred", static_cast<double>(d.Deferred(k)));
    Napi::Array banks = Napi::Array::New(env, mce::kBanks);
    for (int b = 0; b < mce::kBanks; b++) {
      Napi::Object bo = Napi::Object::New(env);
      bo.Set("status", Big(env, v[k].m.status[b]));
      bo.Set("addr", Big(env, v[k].addr[b]));
      bo.Set("misc", Big(env, v[k].misc[b]));
      banks.Set(static_cast<uint32_t>(b), bo);
    }
    c.Set("banks", banks);
    cpus.Set(static_cast<uint32_t>(k), c);
  }
  Napi::Object out = Napi::Object::New(env);
  out.Set("vcpus", cpus);
  out.Set("outcomes", outcomes);
  out.Set("kicks", kicks);
  return out;
}

}  // namespace

void RegisterMceTesting(Napi::Env env, Napi::Object t) {
  t.Set("planMce", Napi::Function::New(env, PlanMce));
  t.Set("simulateDelivery", Napi::Function::New(env, SimulateDelivery));
}

}  // namespace ras_vmm
