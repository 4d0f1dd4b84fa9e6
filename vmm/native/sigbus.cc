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
  std::atomic<int> pending{0};
  std::atomic<int> code{0}, lsb{0};
  std::atomic<uint64_t> addr{0};
};

Slot g_slots[kMaxThreads];
std::atomic<uint64_t> g_total{0}, g_other{0}, g_null_uc{0};
std::atomic<int> g_last_code{0}, g_last_lsb{0};
std::atomic<uint64_t> g_last_addr{0};
std::atomic<bool> g_installed{false};

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
  if (!s) {
    // Not a vCPU: QEMU would abort here. Record it; the test asserts there is none.
    g_other.fetch_add(1);
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
  if (g_installed.load()) return true;
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

void RegisterThread(int slot) {
  g_slots[slot].pending.store(0);
  g_slots[slot].tid.store(static_cast<int>(syscall(SYS_gettid)), std::memory_order_release);
}

void UnregisterThread(int slot) { g_slots[slot].tid.store(0, std::memory_order_release); }

bool Take(int slot, Record* out) {
  Slot& s = g_slots[slot];
  if (s.pending.exchange(0, std::memory_order_acquire) == 0) return false;
  out->code = s.code.load(std::memory_order_relaxed);
  out->lsb = s.lsb.load(std::memory_order_relaxed);
  out->addr = s.addr.load(std::memory_order_relaxed);
  return true;
}

Counters Get() {
  return {g_total.load(), g_other.load(), g_null_uc.load(), g_last_code.load(), g_last_lsb.load(), g_last_addr.load()};
}

}  // namespace ras_vmm::sigbus
