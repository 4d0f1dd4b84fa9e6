#include "testing/vcpu.h"

#include <chrono>
#include <csetjmp>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <thread>

#include "testing/pattern.h"

namespace ras::vcpu {

namespace {

struct Thread {
  int index = 0;
  std::thread th;
  VcpuLog log;
  uint64_t accesses = 0;
  uint64_t wrong = 0;
  int64_t first_wrong = -1;
  std::vector<Mce> mces;
  std::vector<uintptr_t> offlined;  // lost subpages this vCPU's guest no longer touches
  uint64_t rng = 0;                 // in memory, not a register: it must survive siglongjmp
  uint32_t seen = 0;                // stall records whose access completion was noted
};

struct Load {
  Options opts;
  std::atomic<bool> stop{false};
  std::atomic<int> started{0};  // threads that claimed a slot (or failed to)
  std::atomic<int> failed{0};
  std::vector<std::unique_ptr<Thread>> threads;
};

std::mutex g_mu;
std::map<int, std::unique_ptr<Load>> g_loads;
int g_next = 1;
bool g_atexit = false;  // StopAll registered with atexit (under g_mu)

// Stops the threads and joins them; the report is thrown away when nobody asked for it.
void Finish(Load* load, Report* out) {
  load->stop.store(true);
  for (auto& t : load->threads) t->log.stop.store(1);  // also those waiting for a paused engine
  for (auto& t : load->threads) t->th.join();
  if (!out) return;
  for (auto& t : load->threads) {
    out->accesses += t->accesses;
    out->wrong_bytes += t->wrong;
    if (t->first_wrong >= 0 && (out->first_wrong < 0 || t->first_wrong < out->first_wrong)) out->first_wrong = t->first_wrong;
    uint32_t n = t->log.stalls.load();
    out->stalls.emplace_back(t->log.stall, t->log.stall + n);
    out->mces.insert(out->mces.end(), t->mces.begin(), t->mces.end());
  }
}

// Lost for good at a: the whole huge page, or its 4 KiB of a split one.
bool LostAt(Region& r, uintptr_t a) {
  if (a < r.start || a >= r.end) return false;
  uint32_t st = StateOf(r.Word(r.PageIndex(a)).load(std::memory_order_acquire));
  return st == kLost || (st == kSplit && r.SubpageLost(a));
}

void Run(Load* load, Thread* t) {
  ThreadSlot* slot = ClaimSlot(kSlotVcpu);
  if (!slot) {
    load->failed.fetch_add(1);
    load->started.fetch_add(1);
    return;
  }
  sigjmp_buf jb;
  slot->jump = &jb;
  slot->vcpu = &t->log;
  load->started.fetch_add(1);
  Region& r = *load->opts.region;
  uint64_t win_off = load->opts.window_offset;
  uint64_t win_len = load->opts.window_len ? load->opts.window_len : (r.end - r.start) - win_off;
  uint64_t subpages = win_len / kSubpage;
  uint64_t write_threshold = static_cast<uint64_t>(load->opts.write_ratio * 1024.0);
  t->rng = load->opts.seed ^ (0x9E3779B97F4A7C15ull * static_cast<uint64_t>(t->index + 1));
  const uint64_t seed = load->opts.seed;
  if (sigsetjmp(jb, 1) != 0) {
    if (load->opts.land_delay_ms) std::this_thread::sleep_for(std::chrono::milliseconds(load->opts.land_delay_ms));
    // The access hit lost memory: a VMM would inject an MCE, and the guest offlines the page. It
    // did, whenever stop() came: the engine has its report already (JS may have seen it and
    // stopped this load before this thread got here). Only a jump stop() itself caused (a wait for
    // a page under recovery cut short) is no machine check.
    uintptr_t a = slot->fault_addr.load();
    if (!load->stop.load() || LostAt(r, a)) {
      t->mces.push_back({t->index, a});
      t->offlined.push_back(a & ~(kSubpage - 1));
    }
  }
  while (!load->stop.load(std::memory_order_relaxed)) {
    uint64_t rng = t->rng;
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    t->rng = rng;
    uint64_t off = win_off + (rng % subpages) * kSubpage;
    bool offlined = false;
    for (uintptr_t a : t->offlined) offlined |= a == r.start + off;
    if (offlined) continue;
    uint64_t* w = reinterpret_cast<uint64_t*>(r.start + off);
    bool write = ((rng >> 40) & 1023) < write_threshold;
    // One cache line per access keeps many accesses per second across the whole window.
    uint64_t line = ((rng >> 20) % (kSubpage / 64)) * 8;
    for (uint64_t i = line; i < line + 8; i++) {
      uint64_t expect = pattern::PatternWord(seed, off + i * 8);
      uint64_t got = w[i];
      if (got != expect) {
        if (t->first_wrong < 0) t->first_wrong = static_cast<int64_t>(off + i * 8);
        t->wrong += 8;
      }
      if (write) w[i] = expect;
    }
    t->accesses++;
    // The access the handler released us for has completed (on the lazy path it may have waited
    // in the kernel for its piece): that ends the stall.
    uint32_t n = t->log.stalls.load(std::memory_order_acquire);
    if (n > t->seen) {
      uint64_t now = MonotonicNs();
      for (uint32_t i = t->seen; i < n; i++) t->log.stall[i].access_ns = now - t->log.stall[i].t0;
      t->seen = n;
    }
  }
  ReleaseSlot(slot);
}

}  // namespace

int Start(const Options& o) {
  auto load = std::make_unique<Load>();
  load->opts = o;
  Load* raw = load.get();
  for (int i = 0; i < o.threads; i++) {
    auto t = std::make_unique<Thread>();
    t->index = i;
    raw->threads.push_back(std::move(t));
  }
  for (auto& t : raw->threads) t->th = SpawnThread(Run, raw, t.get());
  // Every thread holds its slot before this returns, so the next caller counts free slots right.
  while (raw->started.load() < o.threads) std::this_thread::yield();
  int h;
  {
    std::lock_guard<std::mutex> lock(g_mu);
    h = g_next++;
    g_loads[h] = std::move(load);
    // process.exit() runs exit() without the environment's cleanup hooks: a joinable std::thread
    // destroyed with g_loads would std::terminate. Registered after g_loads exists, so it runs first.
    if (!g_atexit) g_atexit = std::atexit(StopAll) == 0;
  }
  if (raw->failed.load() > 0) {
    Report ignored;
    Stop(h, &ignored);
    return -1;
  }
  return h;
}

bool Stop(int handle, Report* out) {
  std::unique_ptr<Load> load;
  {
    std::lock_guard<std::mutex> lock(g_mu);
    auto it = g_loads.find(handle);
    if (it == g_loads.end()) return false;
    load = std::move(it->second);
    g_loads.erase(it);
  }
  Finish(load.get(), out);
  return true;
}

void StopAll() {
  std::map<int, std::unique_ptr<Load>> loads;
  {
    std::lock_guard<std::mutex> lock(g_mu);
    loads.swap(g_loads);
  }
  for (auto& l : loads) Finish(l.second.get(), nullptr);
}

}  // namespace ras::vcpu
