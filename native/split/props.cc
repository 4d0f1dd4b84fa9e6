#include "split/props.h"

#include <errno.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <pthread.h>
#include <signal.h>
#include <mutex>
#include <vector>

#include "linux_compat.h"

#ifndef MADV_DONTNEED_LOCKED
#define MADV_DONTNEED_LOCKED 24  // Linux >= 5.18
#endif
#ifndef MLOCK_ONFAULT
#define MLOCK_ONFAULT 1
#endif

namespace ras::props {

namespace {
struct Known {
  uint32_t id = 0;        // the region; 0: a free entry
  uintptr_t start = 0;    // its address (is it still mapped?)
  Lock lock = kUnlocked;  // declared
  bool seen = false;      // smaps was read for it
  bool dontdump = false;  // its huge pages' VMAs carry VM_DONTDUMP
  bool foreign = false;   // ... a userfaultfd registration of the VMM's own
  uint64_t read_ns = 0;   // when smaps was last read for it
  int guard = -1;         // ChosenGuard
};
// A region's VMAs are read at most this often unless a replacement went in without what they carry.
constexpr uint64_t kFreshNs = 1'000'000'000ull;

struct Watch {
  uint32_t id;
  uintptr_t start, end;
};

// Never destroyed: a VMM may exit (process.exit) while the thread waits on the condition, and
// destroying a condition variable with a waiter blocks the exit for good.
// Fixed tables, no allocation: a recovery may run exactly when the process can map no more memory
// (vm.max_map_count), where a new heap chunk would throw std::bad_alloc out of a lane.
constexpr size_t kKnown = 256;  // > kMaxRegions: the oldest registration's entry goes when full
constexpr size_t kQueue = 64;
struct Shared {
  std::mutex mu;  // guards everything here and below; never held across a syscall
  Known known[kKnown];
  Watch queue[kQueue];
  size_t q_head = 0, q_len = 0;
  std::condition_variable cv;

  Known* Find(uint32_t id) {
    for (Known& k : known)
      if (k.id == id) return &k;
    return nullptr;
  }
  // An entry for region `id` at `start`: a free one, else one whose region is gone, else the
  // oldest registration's.
  Known& Get(uint32_t id, uintptr_t start) {
    if (Known* k = Find(id)) return *k;
    Known* victim = nullptr;
    for (Known& k : known)
      if (k.id == 0) {
        victim = &k;
        break;
      }
    for (Known& k : known) {
      if (victim) break;
      RegionRef live = RegionRef::Find(k.start);
      if (!live || live->id != k.id) victim = &k;
    }
    if (!victim) {
      victim = &known[0];
      for (Known& k : known)
        if (k.id < victim->id) victim = &k;
    }
    *victim = Known{};
    victim->id = id;
    victim->start = start;
    return *victim;
  }
};
Shared& S() {
  static Shared* s = new Shared();
  return *s;
}

pthread_t g_thread;  // a pthread, not a std::thread: its creation may fail (no exceptions here),
bool g_running = false;  // and nothing is destroyed at exit (a VMM may exit without close)
bool g_stop = false;
Counters g_counters;

bool Has(const char* flags, const char* f) {
  size_t n = strlen(f);
  for (const char* p = flags; (p = strstr(p, f)); p += n)
    if ((p == flags || p[-1] == ' ') && (p[n] == ' ' || p[n] == '\n' || p[n] == 0)) return true;
  return false;
}

// One read of /proc/self/smaps for region [w.start, w.end): what its huge pages' VMAs carry, and the
// replacement VMAs (not hugetlb) that lack VM_DONTDUMP.
struct Scan {
  bool any_huge = false, dontdump = false, foreign = false;
  std::vector<std::pair<uintptr_t, uintptr_t>> undumped;
};
Scan Read(const Watch& w) {
  Scan s;
  FILE* f = fopen("/proc/self/smaps", "re");
  if (!f) return s;
  char line[512];
  uintptr_t vs = 0, ve = 0;
  bool in = false;
  while (fgets(line, sizeof line, f)) {
    unsigned long a, b;
    if (sscanf(line, "%lx-%lx ", &a, &b) == 2 && strchr(line, '-') < strchr(line, ' ')) {
      if (a >= w.end) break;  // in address order: nothing of the region follows
      vs = a;
      ve = b;
      in = vs >= w.start && ve <= w.end;
      continue;
    }
    if (!in || strncmp(line, "VmFlags:", 8) != 0) continue;
    const char* fl = line + 8;
    if (Has(fl, "ht")) {
      s.any_huge = true;
      s.dontdump |= Has(fl, "dd");
      s.foreign |= Has(fl, "um") || Has(fl, "uw") || Has(fl, "ui");
    } else if (!Has(fl, "dd")) {
      s.undumped.emplace_back(vs, ve);
    }
  }
  fclose(f);
  return s;
}

// Reads of smaps are spaced at least this far apart: a burst of recoveries is served by a few.
constexpr auto kSpacing = std::chrono::milliseconds(20);

void Loop() {
  // Normal priority, not lower: a read holds mmap_lock (shared) a few VMAs at a time, and a lane's
  // mremap waits for it; a reader preempted for long by the vCPUs would stall that mremap.
  std::unique_lock<std::mutex> lock(S().mu);
  for (;;) {
    S().cv.wait(lock, [] { return g_stop || S().q_len > 0; });
    if (g_stop) return;
    Watch w = S().queue[S().q_head];
    S().q_head = (S().q_head + 1) % kQueue;
    S().q_len--;
    lock.unlock();
    // Holds the region against removal: nothing else may be mapped at its addresses meanwhile.
    RegionRef hold = RegionRef::Find(w.start);
    if (hold && hold->id == w.id) {
      Scan s = Read(w);
      bool dd;
      {
        std::lock_guard<std::mutex> g(S().mu);
        Known& k = S().Get(w.id, w.start);
        k.read_ns = MonotonicNs();
        if (s.any_huge) {  // else (every huge page split) what was seen last stands
          if (s.foreign && !k.foreign) g_counters.foreign_uffd++;
          k.dontdump = s.dontdump;
          k.foreign = s.foreign;
          k.seen = true;
        }
        dd = k.seen && k.dontdump;
      }
      if (dd)
        for (auto& [a, b] : s.undumped)
          if (madvise(reinterpret_cast<void*>(a), b - a, MADV_DONTDUMP) == 0) {
            std::lock_guard<std::mutex> g(S().mu);
            g_counters.dontdump_marked++;
          }
    }
    hold.Release();
    lock.lock();
    S().cv.wait_for(lock, kSpacing, [] { return g_stop; });
  }
}
}  // namespace

Lock FutureLock() {
  // A fresh mapping is VM_LOCKED exactly when mm->def_flags is (mlockall MCL_FUTURE); PROT_NONE so
  // that nothing is populated. MCL_ONFAULT then leaves a readable probe page unpopulated.
  void* p = mmap(nullptr, kSubpage, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) return kUnlocked;
  Lock l = kUnlocked;
  if (msync(p, kSubpage, MS_INVALIDATE) != 0 && errno == EBUSY) {
    munmap(p, kSubpage);
    p = mmap(nullptr, kSubpage, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) return kLocked;
    unsigned char v = 0;
    l = mincore(p, kSubpage, &v) == 0 && !(v & 1) ? kLockedOnFault : kLocked;
  }
  munmap(p, kSubpage);
  return l;
}

void SetRegionLock(const Region& r, Lock l) {
  std::lock_guard<std::mutex> g(S().mu);
  S().Get(r.id, r.start).lock = l;
}

Lock RegionLock(uint32_t id) {
  std::lock_guard<std::mutex> g(S().mu);
  Known* k = S().Find(id);
  return k ? k->lock : kUnlocked;
}

int ChosenGuard(const Region& r) {
  std::lock_guard<std::mutex> g(S().mu);
  Known& k = S().Get(r.id, r.start);
  if (k.guard < 0) k.guard = r.guard.load();
  return k.guard;
}

void Forget(uint32_t id) {
  std::lock_guard<std::mutex> g(S().mu);
  if (Known* k = S().Find(id)) *k = Known{};
}

Lock Wanted(const Region& r) {
  Lock l = RegionLock(r.id);
  return l != kUnlocked ? l : FutureLock();
}

bool IsLocked(const void* addr, uint64_t len) {
  return msync(const_cast<void*>(addr), len, MS_INVALIDATE) != 0 && errno == EBUSY;
}

int LockReplacement(char* addr, uint64_t len) {
  // MLOCK_ONFAULT: every page is present already (a populating mlock would stop at a marker).
  if (syscall(SYS_mlock2, addr, len, MLOCK_ONFAULT) == 0) return 0;
  int e = errno;
  if (e == EINVAL && mlock(addr, len) == 0) return 0;  // kernels before 4.4
  return e;
}

void CountLockFailure(int e) {
  std::lock_guard<std::mutex> g(S().mu);
  g_counters.lock_failures++;
  g_counters.lock_errno = e;
}

int Drop(void* addr, uint64_t len) {
  if (madvise(addr, len, MADV_DONTNEED) == 0) return 0;
  int e = errno;
  if (e != EINVAL) return e;
  // Locked (mlock, or mlockall(MCL_FUTURE) made it so): the kernel needs the locked variant.
  return madvise(addr, len, MADV_DONTNEED_LOCKED) == 0 ? 0 : errno;
}

bool MarkLikeRegion(const Region& r, char* addr, uint64_t len) {
  bool dd, known;
  {
    std::lock_guard<std::mutex> g(S().mu);
    Known* k = S().Find(r.id);
    known = k && k->seen;
    dd = known && k->dontdump;
  }
  if (dd) madvise(addr, len, MADV_DONTDUMP);
  return known;
}

void Note(const Region& r, bool force) {
  {
    std::lock_guard<std::mutex> g(S().mu);
    if (g_stop) return;
    Known* k = S().Find(r.id);
    if (!force && k && k->seen && MonotonicNs() - k->read_ns < kFreshNs) return;
    for (size_t i = 0; i < S().q_len; i++)
      if (S().queue[(S().q_head + i) % kQueue].id == r.id) return;  // one read will do for both
    if (!g_running) return;  // not started (or could not be): nothing reads smaps
    if (S().q_len == kQueue) return;  // full: a later recovery asks again
    S().queue[(S().q_head + S().q_len) % kQueue] = {r.id, r.start, r.end};
    S().q_len++;
  }
  S().cv.notify_one();
}

void* Trampoline(void*) {
  Loop();
  return nullptr;
}

void Start() {
  std::lock_guard<std::mutex> g(S().mu);
  if (g_running) return;
  g_stop = false;
  // At open, never on a recovery's path: creating a thread needs memory and map entries (a
  // recovery may run exactly when those are exhausted). Where it fails nothing reads smaps.
  sigset_t block, old;
  AsyncSignals(&block);
  pthread_sigmask(SIG_BLOCK, &block, &old);
  g_running = pthread_create(&g_thread, nullptr, Trampoline, nullptr) == 0;
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
}

void Stop() {
  bool running;
  {
    std::lock_guard<std::mutex> g(S().mu);
    g_stop = true;
    S().q_len = 0;
    running = g_running;
    g_running = false;
  }
  S().cv.notify_all();
  if (running) pthread_join(g_thread, nullptr);
}

Counters GetCounters() {
  std::lock_guard<std::mutex> g(S().mu);
  return g_counters;
}

void CountLockedEager() {
  std::lock_guard<std::mutex> g(S().mu);
  g_counters.locked_eager++;
}

}  // namespace ras::props
