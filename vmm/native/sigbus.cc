#include "sigbus.h"

#include <errno.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>

namespace ras_vmm::sigbus {

namespace {

struct Slot {
  std::atomic<int> tid{0};
  std::atomic<int> in_run{0};
  std::atomic<int> pending{0};
  std::atomic<int> code{0}, lsb{0};
  std::atomic<uint64_t> addr{0};
};

Slot g_slots[kMaxThreads];
std::atomic<uint64_t> g_total{0}, g_other{0}, g_null_uc{0}, g_outside_run{0};
std::atomic<int> g_last_code{0}, g_last_lsb{0};
std::atomic<uint64_t> g_last_addr{0};
std::atomic<bool> g_installed{false};

void Say(const char* s) {
  size_t n = 0;
  while (s[n]) n++;
  ssize_t r = write(2, s, n);
  (void)r;
}

void Hex(uint64_t v, char* out) {  // 16 digits and a NUL
  for (int k = 15; k >= 0; k--, v >>= 4) out[k] = "0123456789abcdef"[v & 0xf];
  out[16] = 0;
}

// QEMU's hardware_memory_error(): an action-required error in memory the VMM itself touched.
[[noreturn]] void Die(const siginfo_t* si, bool vcpu) {
  char addr[17];
  Hex(reinterpret_cast<uint64_t>(si->si_addr), addr);
  Say("ras_vmm: hardware memory error at 0x");
  Say(addr);
  Say(vcpu ? " touched by a vCPU thread outside KVM_RUN" : " touched by a VMM thread that is not a vCPU");
  Say(": the access would repeat forever; exiting (as QEMU does)\n");
  _exit(kExitHardwareMemoryError);
}

void Handler(int, siginfo_t* si, void* uc) {
  int saved = errno;
  int tid = static_cast<int>(syscall(SYS_gettid));
  g_total.fetch_add(1);
  if (!uc) g_null_uc.fetch_add(1);
  g_last_code.store(si->si_code);
  g_last_lsb.store(si->si_addr_lsb);
  g_last_addr.store(reinterpret_cast<uint64_t>(si->si_addr));
  Slot* s = nullptr;
  for (Slot& c : g_slots)
    if (c.tid.load(std::memory_order_acquire) == tid) s = &c;
  bool ao = si->si_code == BUS_MCEERR_AO;
  if (!s || !s->in_run.load(std::memory_order_acquire)) {
    // Not inside KVM_RUN: our own access (or another thread's). An AO re-executes nothing.
    if (!ao && si->si_code > 0) Die(si, s != nullptr);  // si_code <= 0: sent by kill(), nothing repeats
    (s ? g_outside_run : g_other).fetch_add(1);
    errno = saved;
    return;
  }
  s->code.store(si->si_code, std::memory_order_relaxed);
  s->lsb.store(si->si_addr_lsb, std::memory_order_relaxed);
  s->addr.store(reinterpret_cast<uint64_t>(si->si_addr), std::memory_order_relaxed);
  s->pending.store(1, std::memory_order_release);
  errno = saved;
}

}  // namespace

bool Install(bool* engine_first) {
  struct sigaction old = {};
  if (sigaction(SIGBUS, nullptr, &old) != 0) return false;
  *engine_first = (old.sa_flags & SA_SIGINFO) && old.sa_sigaction != Handler;
  if (g_installed.load() && !*engine_first) return true;
  // Another handler owns SIGBUS (an engine opened first): replacing it would cut the engine out;
  // the order is the VMM's first, then the engine, which chains to it.
  if (*engine_first) return false;
  struct sigaction sa = {};
  sa.sa_sigaction = Handler;
  sa.sa_flags = SA_SIGINFO;  // no SA_RESTART: KVM_RUN returns EINTR and the loop looks at the record
  sigemptyset(&sa.sa_mask);
  if (sigaction(SIGBUS, &sa, nullptr) != 0) return false;
  g_installed.store(true);
  return true;
}

bool Installed() { return g_installed.load(); }

bool IsCurrentHandler() {
  struct sigaction cur = {};
  sigaction(SIGBUS, nullptr, &cur);
  return (cur.sa_flags & SA_SIGINFO) && cur.sa_sigaction == Handler;
}

int RegisterThread() {
  int tid = static_cast<int>(syscall(SYS_gettid));
  for (int k = 0; k < kMaxThreads; k++) {
    int expect = 0;
    if (g_slots[k].tid.compare_exchange_strong(expect, tid, std::memory_order_acq_rel)) {
      g_slots[k].in_run.store(0);
      g_slots[k].pending.store(0);
      return k;
    }
  }
  return -1;
}

void UnregisterThread(int slot) {
  if (slot < 0) return;
  g_slots[slot].in_run.store(0);
  g_slots[slot].tid.store(0, std::memory_order_release);
}

void EnterRun(int slot) {
  if (slot >= 0) g_slots[slot].in_run.store(1, std::memory_order_release);
}

void LeaveRun(int slot) {
  if (slot >= 0) g_slots[slot].in_run.store(0, std::memory_order_release);
}

bool Take(int slot, Record* out) {
  if (slot < 0) return false;
  Slot& s = g_slots[slot];
  if (s.pending.exchange(0, std::memory_order_acquire) == 0) return false;
  out->code = s.code.load(std::memory_order_relaxed);
  out->lsb = s.lsb.load(std::memory_order_relaxed);
  out->addr = s.addr.load(std::memory_order_relaxed);
  return true;
}

Counters Get() {
  return {g_total.load(), g_other.load(), g_null_uc.load(), g_outside_run.load(), g_last_code.load(), g_last_lsb.load(), g_last_addr.load()};
}

}  // namespace ras_vmm::sigbus
