// testing_addon: ras_vmm.node's `testing` object, for host tests without /dev/kvm: the engine
// question's bound under stop(), the KVM_RUN gate against a kick, the MP table, a raw read of
// guest memory (the VMM's own access, which must die cleanly on a lost frame, never spin), the
// guarded copy's table versions and the guest's lost list. The machine-check plan and its delivery
// against a model of KVM are testing_mce.cc's.
#include <napi.h>

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <time.h>

#include <atomic>
#include <cstddef>
#include <cstring>
#include <thread>
#include <vector>

#include "linux_mptable.h"
#include "napi_util.h"
#include "proto.h"
#include "sigbus.h"
#include "vcpu_thread.h"

namespace ras_vmm {

void RegisterMceTesting(Napi::Env env, Napi::Object t);  // testing_mce.cc

namespace {

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
// { nlost, listed, capacity, listEnd, mailboxes, mailboxesEnd, image, mailboxSize, boxes,
// mailboxBytesChanged }: boxes[cpu] the GPAs of its main, #MC and poll mailboxes; listEnd is the GPA just
// past the last list slot, mailboxBytesChanged the mailbox bytes that are no longer 0xa5.
Napi::Value GuestLostList(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint32_t n = info[0].As<Napi::Number>().Uint32Value();
  std::vector<uint8_t> ram(RAS_GUEST_SYSTEM_END, 0);
  const uint64_t mb_bytes = RAS_GUEST_MAILBOX_END - RAS_GUEST_MAILBOX;
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
  out.Set("mailboxesEnd", static_cast<double>(RAS_GUEST_MAILBOX_END));
  out.Set("image", static_cast<double>(RAS_GUEST_IMAGE));
  out.Set("mailboxSize", static_cast<double>(sizeof(ras_guest_mailbox)));
  Napi::Array boxes = Napi::Array::New(env);  // [cpu][RAS_BOX_MAIN, RAS_BOX_MCE, RAS_BOX_POLL]: GPAs
  for (uint32_t c = 0; c < RAS_GUEST_MAX_CPUS; c++) {
    Napi::Array b = Napi::Array::New(env, 3);
    for (uint32_t k : {RAS_BOX_MAIN, RAS_BOX_MCE, RAS_BOX_POLL}) b.Set(k, static_cast<double>(RAS_GUEST_MAILBOX_OF(c, k)));
    boxes.Set(c, b);
  }
  out.Set("boxes", boxes);
  out.Set("mailboxBytesChanged", changed);
  return out;
}

}  // namespace

void RegisterTesting(Napi::Env env, Napi::Object exports) {
  Napi::Object t = Napi::Object::New(env);
  RegisterMceTesting(env, t);
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
