#include "simulate/simulate.h"

#include <errno.h>
#include <sys/mman.h>
#include <time.h>

#include <atomic>
#include <map>
#include <mutex>
#include <new>
#include <set>
#include <tuple>
#include <vector>

#include "capture/signals.h"
#include "capture/stale.h"

namespace ras::simulate {

namespace {

// Everything below is changed only under g_mu; the SIGSEGV handler reads the range tables without it.
std::mutex g_mu;
// Held by Poison() from its check of a page's state to its mprotect of that page, and taken by
// Settle(). Not g_mu: a recovery's file reads (ClampRead) must not wait for that mprotect.
std::mutex g_place_mu;
std::atomic<bool> g_used{false};  // a Poison() ever ran: Settle() has something to wait for
std::atomic<uint64_t> g_poison_hold_ns{0};  // tests only: SetPoisonHoldForTests

// Poisoned 4 KiB of backing files, ordered so a read finds the first poison at or after its
// offset in O(log n).
using FileKey = std::tuple<uint64_t, uint64_t, uint64_t>;  // dev, ino, 4 KiB aligned file offset
std::set<FileKey> g_file_poison;

// Address ranges made PROT_NONE to stand for poison: a 4 KiB subpage or a whole huge page, each
// starting at a multiple of its size. The handler finds one by its start address and size (lsb) in
// open-addressed hash tables that are only ever added to: table i has kFirst << i slots, a new one
// is made when the last is half full, and a slot, once given a key, keeps it (forgetting a range
// clears `live`; poisoning it again sets it). So a lookup is a few probes in each of O(log n)
// tables, and as many ranges as a test asks for fit.
struct Range {
  std::atomic<uintptr_t> key{0};  // start | lsb; 0: empty slot
  std::atomic<int> live{0};
  uint64_t dev = 0, ino = 0, file_off = 0;  // the huge page of the file the range belongs to
};
struct Table {
  explicit Table(size_t n) : size(n), slots(new (std::nothrow) Range[n]) {}
  const size_t size;
  Range* const slots;
  size_t used = 0;  // under g_mu
};
constexpr size_t kFirst = 1024;
constexpr int kMaxTables = 40;
std::atomic<Table*> g_tables[kMaxTables];
std::atomic<uint64_t> g_lsbs{0};  // the range sizes (bit lsb) in use
// Under g_mu: the live ranges by key (so by start address) and by file page, for the Forget* calls.
std::map<uintptr_t, Range*> g_by_addr;  // key -> range
std::multimap<FileKey, Range*> g_by_file;

size_t Hash(uintptr_t key, size_t size) { return static_cast<size_t>((key >> 12) * 0x9E3779B97F4A7C15ull >> 7) & (size - 1); }

// The slot holding `key`, or null. Lock-free.
Range* Lookup(uintptr_t key) {
  for (int t = 0; t < kMaxTables; t++) {
    Table* tab = g_tables[t].load(std::memory_order_acquire);
    if (!tab) break;
    for (size_t i = Hash(key, tab->size), n = 0; n < tab->size; i = (i + 1) & (tab->size - 1), n++) {
      uintptr_t k = tab->slots[i].key.load(std::memory_order_acquire);
      if (k == 0) break;
      if (k == key) return &tab->slots[i];
    }
  }
  return nullptr;
}

int FaultLsb(uintptr_t addr, int max_lsb) {
  uint64_t lsbs = g_lsbs.load(std::memory_order_acquire);
  // The largest first: a huge page that is poisoned whole reports its huge page's lsb.
  for (int lsb = max_lsb < 63 ? max_lsb : 63; lsb >= kSubpageShift; lsb--) {
    if (!((lsbs >> lsb) & 1)) continue;
    uintptr_t start = addr & ~((uintptr_t{1} << lsb) - 1);
    Range* r = Lookup(start | static_cast<uintptr_t>(lsb));
    if (r && r->live.load(std::memory_order_acquire) == 1) return lsb;
  }
  return 0;
}

void Unindex(Range* r) {
  g_by_addr.erase(r->key.load());
  auto range = g_by_file.equal_range(FileKey{r->dev, r->ino, r->file_off});
  for (auto it = range.first; it != range.second; ++it)
    if (it->second == r) {
      g_by_file.erase(it);
      break;
    }
}

// Under g_mu. False only when memory for a new table cannot be had.
bool AddRange(uintptr_t start, int lsb, const Region& reg, uint64_t file_off) {
  uintptr_t key = start | static_cast<uintptr_t>(lsb);
  Range* r = Lookup(key);
  if (!r) {
    int t = 0;
    while (t + 1 < kMaxTables && g_tables[t + 1].load()) t++;
    Table* tab = g_tables[t].load();  // the newest table (null before the first range)
    if (!tab || tab->used * 2 >= tab->size) {
      int next = tab ? t + 1 : 0;
      if (next >= kMaxTables) return false;
      Table* fresh = new (std::nothrow) Table(kFirst << next);
      if (!fresh || !fresh->slots) return false;
      g_tables[next].store(fresh, std::memory_order_release);
      tab = fresh;
    }
    size_t i = Hash(key, tab->size);
    while (tab->slots[i].key.load(std::memory_order_relaxed) != 0) i = (i + 1) & (tab->size - 1);
    r = &tab->slots[i];
    r->key.store(key, std::memory_order_release);
    tab->used++;
  } else if (r->live.load() == 1) {
    Unindex(r);
  }
  r->dev = reg.dev;
  r->ino = reg.ino;
  r->file_off = file_off;
  g_by_addr[key] = r;
  g_by_file.emplace(FileKey{reg.dev, reg.ino, file_off}, r);
  g_lsbs.fetch_or(uint64_t{1} << lsb, std::memory_order_acq_rel);
  r->live.store(1, std::memory_order_release);
  return true;
}

}  // namespace

void Enable() { signals::SetSimulatedFaultHook(FaultLsb); }

void SetPoisonHoldForTests(uint64_t ns) { g_poison_hold_ns.store(ns); }

void Settle() {
  if (!g_used.load(std::memory_order_acquire)) return;
  std::lock_guard<std::mutex> lock(g_place_mu);
}

int Poison(Region& r, uintptr_t addr, int code, bool send_signal, const char** syscall) {
  g_used.store(true, std::memory_order_release);
  uintptr_t sub = addr & ~(kSubpage - 1);
  uint32_t page = r.PageIndex(addr);
  uintptr_t page_addr = r.PageAddress(page);
  uint64_t page_file_off = r.file_offset + (page_addr - r.start);
  int lsb = static_cast<int>(r.huge_shift);
  // The page as it is now, and for a page not yet split, held so until its mprotect is done: a
  // recovery that moves it out of Normal meanwhile waits in Settle() before it replaces the
  // mapping, so the mprotect below always meets the huge page it was decided for.
  std::unique_lock<std::mutex> held(g_place_mu, std::defer_lock);
  uint32_t st = StateOf(r.Word(page).load());
  if (st != kSplit && st != kLost) {
    held.lock();
    st = StateOf(r.Word(page).load());
    if (st == kSplit) held.unlock();  // split since: as a split page (its 4 KiB only)
  }
  if (st == kSplit) {
    // Ordinary pages now: the kernel would take exactly this 4 KiB page away.
    // The range is known as poison before it becomes inaccessible: a thread faulting in between
    // must find it.
    if (!r.SubpageLost(sub)) {
      // The kernel poisons pages that are there: under a lazy fill this 4 KiB may not be in yet
      // (a poisoned missing page would be one nobody could ever have read). A kernel-mode read
      // brings it in, as any access would (the fault thread serves it).
      stale::KernelCanRead(sub);
      bool added;
      {
        std::lock_guard<std::mutex> lock(g_mu);
        added = AddRange(sub, kSubpageShift, r, page_file_off);
      }
      if (!added) {
        *syscall = "simulate";
        return ENOMEM;
      }
      if (mprotect(reinterpret_cast<void*>(sub), kSubpage, PROT_NONE) != 0) {
        *syscall = "mprotect";
        return errno;
      }
    }
    lsb = kSubpageShift;
  } else if (st != kLost) {
    // g_place_mu is held (above).
    bool added = true;
    {
      std::lock_guard<std::mutex> lock(g_mu);
      g_file_poison.insert(FileKey{r.dev, r.ino, r.file_offset + (sub - r.start)});
      if (st == kNormal) added = AddRange(page_addr, lsb, r, page_file_off);
    }
    if (uint64_t hold = g_poison_hold_ns.load(); hold && st == kNormal) {
      struct timespec ms = {0, 1000000};
      for (uint64_t end = MonotonicNs() + hold; MonotonicNs() < end;) {
        uint32_t now = StateOf(r.Word(page).load());
        if (now == kSplit || now == kLost) break;
        nanosleep(&ms, nullptr);
      }
    }
    if (st == kNormal) {
      if (!added) {
        *syscall = "simulate";
        return ENOMEM;
      }
      if (mprotect(reinterpret_cast<void*>(page_addr), r.huge_size, PROT_NONE) != 0) {
        *syscall = "mprotect";
        return errno;
      }
    }
  }
  if (held.owns_lock()) held.unlock();
  if (send_signal) signals::RaiseMemoryError(addr, code, lsb);
  return 0;
}

void PoisonFileOnly(uint64_t dev, uint64_t ino, uint64_t off) {
  std::lock_guard<std::mutex> lock(g_mu);
  g_file_poison.insert(FileKey{dev, ino, off & ~(kSubpage - 1)});
}

int64_t ClampRead(uint64_t dev, uint64_t ino, uint64_t off, uint64_t len) {
  std::lock_guard<std::mutex> lock(g_mu);
  auto it = g_file_poison.lower_bound(FileKey{dev, ino, off & ~(kSubpage - 1)});
  if (it == g_file_poison.end() || std::get<0>(*it) != dev || std::get<1>(*it) != ino) return static_cast<int64_t>(len);
  uint64_t p = std::get<2>(*it);
  if (off >= p) return -1;  // p is off's own 4 KiB
  return static_cast<int64_t>(p - off < len ? p - off : len);
}

void ForgetFileRange(uint64_t dev, uint64_t ino, uint64_t off, uint64_t len) {
  std::lock_guard<std::mutex> lock(g_mu);
  uint64_t end = off + len < off ? UINT64_MAX : off + len;
  g_file_poison.erase(g_file_poison.lower_bound(FileKey{dev, ino, off}), g_file_poison.lower_bound(FileKey{dev, ino, end}));
  auto first = g_by_file.lower_bound(FileKey{dev, ino, off});
  auto last = g_by_file.lower_bound(FileKey{dev, ino, end});
  for (auto it = first; it != last; ++it) {
    it->second->live.store(0, std::memory_order_release);
    g_by_addr.erase(it->second->key.load());
  }
  g_by_file.erase(first, last);
}

void ForgetAddressRange(uintptr_t start, uintptr_t end) {
  std::lock_guard<std::mutex> lock(g_mu);
  std::vector<Range*> gone;
  for (auto it = g_by_addr.lower_bound(start); it != g_by_addr.end() && it->first < end; ++it) {
    uintptr_t first = it->first & ~(kSubpage - 1);
    int lsb = static_cast<int>(it->first & (kSubpage - 1));
    if (first + (uintptr_t{1} << lsb) <= end) gone.push_back(it->second);
  }
  for (Range* r : gone) {
    r->live.store(0, std::memory_order_release);
    Unindex(r);
  }
}

}  // namespace ras::simulate
