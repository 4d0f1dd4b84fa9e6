// testing_addon: ras_vmm.node's `testing` object, for host tests without /dev/kvm: the machine-
// check plan and its delivery to N vCPUs against a model of KVM's KVM_X86_SET_MCE, the engine
// question's bound under stop(), the KVM_RUN gate against a kick, the MP table, and a raw read of
// guest memory (the VMM's own access, which must die cleanly on a lost frame, never spin).
#include <napi.h>

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <time.h>

#include <atomic>
#include <cstddef>
#include <cstring>
#include <map>
#include <thread>
#include <vector>

#include "linux_mptable.h"
#include "mce_delivery.h"
#include "napi_util.h"
#include "proto.h"
#include "sigbus.h"
#include "vcpu_thread.h"

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

// An engine that answers RECOVERING for ever, waiting each call's timeout (a long recovery).
int SlowCheck(uint64_t, int timeout_ms, hugetlb_ras_status* st) {
  timespec ts = {timeout_ms / 1000, (timeout_ms % 1000) * 1000000L};
  nanosleep(&ts, nullptr);
  *st = {};
  st->state = HUGETLB_RAS_RECOVERING;
  return 0;
}
int EagainThenLost(uint64_t addr, int, hugetlb_ras_status* st) {
  static std::atomic<int> calls{0};
  *st = {};
  if (calls.fetch_add(1) % 3 < 2) return -EAGAIN;
  st->state = HUGETLB_RAS_LOST;
  st->gpa = addr & ~0xfffull;
  return 0;
}

// askEngine({ waitMs, quitAfterMs, engine: 'slow' | 'eagain' }): AskEngine as a vCPU thread runs
// it, while another thread sets quit (a stop()) after quitAfterMs. Returns { rc, ms, state }.
Napi::Value AskEngineTest(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = info[0].As<Napi::Object>();
  int wait_ms = o.Get("waitMs").As<Napi::Number>().Int32Value();
  int quit_after = o.Get("quitAfterMs").As<Napi::Number>().Int32Value();
  bool eagain = o.Get("engine").ToString().Utf8Value() == "eagain";
  hugetlb_ras_api api = {};
  api.version = HUGETLB_RAS_API_VERSION;
  api.size = sizeof api;
  api.check_hva = eagain ? EagainThenLost : SlowCheck;
  api.check_gpa = api.check_hva;
  std::atomic<bool> quit{false};
  std::atomic<uint64_t> recovering{0};
  std::thread stopper([&] {
    if (quit_after < 0) return;
    timespec ts = {quit_after / 1000, (quit_after % 1000) * 1000000L};
    nanosleep(&ts, nullptr);
    quit = true;
  });
  hugetlb_ras_status st = {};
  uint64_t t0 = NowNs();
  int rc = AskEngine(&api, wait_ms, false, 0x5000, &st, &recovering, &quit);
  double ms = (NowNs() - t0) / 1e6;
  stopper.join();
  Napi::Object out = Napi::Object::New(env);
  out.Set("rc", rc);
  out.Set("ms", ms);
  out.Set("state", static_cast<double>(st.state));
  out.Set("gpa", Big(env, st.gpa));
  return out;
}

struct GateArg {
  kvm_run* run;
  std::atomic<bool>* quit;
};

// A Kick() (quit, then immediate_exit) landing between the gate's two steps.
void KickBetween(void* p) {
  auto* a = static_cast<GateArg*>(p);
  a->quit->store(true);
  __atomic_store_n(&a->run->immediate_exit, 1, __ATOMIC_SEQ_CST);
}

// gateWithKick(): EnterGate with a kick between its steps. { entered, immediateExit }: a kick is
// lost when the loop enters KVM_RUN with immediate_exit clear.
Napi::Value GateWithKick(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  kvm_run run = {};
  std::atomic<bool> quit{false};
  GateArg a{&run, &quit};
  bool entered = EnterGate(&run, &quit, KickBetween, &a);
  Napi::Object out = Napi::Object::New(env);
  out.Set("entered", entered);
  out.Set("immediateExit", static_cast<double>(run.immediate_exit));
  return out;
}

// mpTable(vcpus): the bytes WriteMpTable writes (empty when they do not fit).
Napi::Value MpTable(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint8_t buf[linux_boot::kMpTableMax];
  size_t n = linux_boot::WriteMpTable(buf, info[0].As<Napi::Number>().Int32Value());
  return Napi::Buffer<uint8_t>::Copy(env, buf, n);
}

// rawRead(hva): one byte read by this (the JS) thread, as the VMM's own code reads guest RAM.
Napi::Value RawRead(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint64_t hva = U64(info[0], "hva");
  if (env.IsExceptionPending()) return env.Undefined();
  return Napi::Number::New(env, *reinterpret_cast<volatile uint8_t*>(hva));
}

// sigbusSlots(): two threads (as two VMs' vCPU 0) claim slots; a SIGBUS taken by the first inside
// "KVM_RUN" is recorded in its slot only. { slots: [a, b], takenA, takenB, addrA }.
Napi::Value SigbusSlots(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::atomic<int> slot_a{-2}, slot_b{-2};
  std::atomic<int> phase{0};
  sigbus::Record ra = {}, rb = {};
  bool took_a = false, took_b = false;
  std::thread b([&] {
    slot_b = sigbus::RegisterThread();
    while (phase.load() < 2) sched_yield();
    took_b = sigbus::Take(slot_b, &rb);
    sigbus::UnregisterThread(slot_b);
  });
  std::thread a([&] {
    slot_a = sigbus::RegisterThread();
    while (slot_b.load() == -2) sched_yield();
    sigbus::EnterRun(slot_a);
    pthread_kill(pthread_self(), SIGBUS);  // delivered before pthread_kill returns (to self)
    sigbus::LeaveRun(slot_a);
    phase = 2;
    took_a = sigbus::Take(slot_a, &ra);
    sigbus::UnregisterThread(slot_a);
  });
  a.join();
  b.join();
  Napi::Object out = Napi::Object::New(env);
  Napi::Array slots = Napi::Array::New(env, 2);
  slots.Set(0u, slot_a.load());
  slots.Set(1u, slot_b.load());
  out.Set("slots", slots);
  out.Set("takenA", took_a);
  out.Set("takenB", took_b);
  return out;
}

// A v2 table whose copy_from_guest reports frame 0 lost when asked (the engine's guarded copy).
std::atomic<bool> g_copy_lost{false};
int FakeCopyFrom(uint64_t, void* dst, uint64_t len, uint64_t* lost, int) {
  memset(dst, g_copy_lost ? 0 : 0x5a, len);
  if (g_copy_lost) lost[0] |= 1;
  return 0;
}
int FakeCopyTo(uint64_t, const void*, uint64_t, uint64_t* lost, int) {
  if (g_copy_lost) lost[0] |= 1;
  return 0;
}

// guestCopy({ version: 1 | 2, lost }): GuestCopy against a table of that version.
// { rc, byte } (byte: the first byte read, -1 when nothing was copied).
Napi::Value GuestCopyTest(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = info[0].As<Napi::Object>();
  int version = o.Get("version").As<Napi::Number>().Int32Value();
  g_copy_lost = o.Get("lost").ToBoolean().Value();
  hugetlb_ras_api api = {};
  api.version = static_cast<uint32_t>(version);
  api.size = version >= 2 ? sizeof api : static_cast<uint32_t>(offsetof(hugetlb_ras_api, copy_from_guest));
  api.check_hva = SlowCheck;
  api.check_gpa = SlowCheck;
  if (version >= 2) {
    api.copy_from_guest = FakeCopyFrom;
    api.copy_to_guest = FakeCopyTo;
  }
  uint8_t buf[16];
  memset(buf, 0xee, sizeof buf);
  int rc = GuestCopy(&api, 0x1000, buf, 8, false, 0);
  Napi::Object out = Napi::Object::New(env);
  out.Set("rc", rc);
  out.Set("byte", rc == -ENOSYS ? -1 : buf[0]);
  out.Set("writeRc", GuestCopy(&api, 0x1000, buf, 8, true, 0));
  return out;
}

// guestLostList(n): the system area as the VMM lays it out (vmm/guest/proto.h), every mailbox
// filled with 0xa5, then n frames put on the config's lost list as the guest's #MC handler does.
// { nlost, listed, capacity, listEnd, mailboxes, mailboxBytesChanged }: listEnd is the GPA just
// past the last list slot, mailboxBytesChanged the mailbox bytes that are no longer 0xa5.
Napi::Value GuestLostList(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint32_t n = info[0].As<Napi::Number>().Uint32Value();
  std::vector<uint8_t> ram(RAS_GUEST_SYSTEM_END, 0);
  const uint64_t mb_bytes = 2ull * RAS_GUEST_MAX_CPUS * sizeof(ras_guest_mailbox);
  memset(ram.data() + RAS_GUEST_MAILBOX, 0xa5, mb_bytes);
  auto* cfg = reinterpret_cast<ras_guest_config*>(ram.data() + RAS_GUEST_CONFIG);
  for (uint32_t k = 0; k < n; k++) ras_guest_list_lost(cfg, RAS_GUEST_SYSTEM_END + (static_cast<uint64_t>(k) << 12));
  uint32_t listed = 0;
  for (uint64_t k = 0; k < RAS_GUEST_MAX_LOST; k++)
    if (cfg->lost[k] == ((RAS_GUEST_SYSTEM_END + (k << 12)) | 1)) listed++;
  uint32_t changed = 0;
  for (uint64_t b = 0; b < mb_bytes; b++) changed += ram[RAS_GUEST_MAILBOX + b] != 0xa5;
  Napi::Object out = Napi::Object::New(env);
  out.Set("nlost", static_cast<double>(cfg->nlost));
  out.Set("listed", listed);
  out.Set("capacity", static_cast<double>(RAS_GUEST_MAX_LOST));
  out.Set("listEnd", static_cast<double>(RAS_GUEST_CONFIG + offsetof(ras_guest_config, lost) + RAS_GUEST_MAX_LOST * sizeof(uint64_t)));
  out.Set("mailboxes", static_cast<double>(RAS_GUEST_MAILBOX));
  out.Set("mailboxBytesChanged", changed);
  return out;
}

}  // namespace

void RegisterTesting(Napi::Env env, Napi::Object exports) {
  Napi::Object t = Napi::Object::New(env);
  t.Set("planMce", Napi::Function::New(env, PlanMce));
  t.Set("simulateDelivery", Napi::Function::New(env, SimulateDelivery));
  t.Set("askEngine", Napi::Function::New(env, AskEngineTest));
  t.Set("gateWithKick", Napi::Function::New(env, GateWithKick));
  t.Set("mpTable", Napi::Function::New(env, MpTable));
  t.Set("rawRead", Napi::Function::New(env, RawRead));
  t.Set("sigbusSlots", Napi::Function::New(env, SigbusSlots));
  t.Set("guestCopy", Napi::Function::New(env, GuestCopyTest));
  t.Set("guestLostList", Napi::Function::New(env, GuestLostList));
  exports.Set("testing", t);
}

}  // namespace ras_vmm
