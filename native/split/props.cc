// What smaps says of a region's VMAs (props.h): MADV_DONTDUMP and a userfaultfd registration of the
// VMM's own, read by a thread of its own after a recovery starts and ends; replacements marked alike.
#include "split/props.h"

#include <errno.h>
#include <sys/mman.h>
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
#include "split/props_table.h"

namespace ras::props {

Shared& S() {
  static Shared* s = new Shared();
  return *s;
}

namespace {
// A region's VMAs are read at most this often unless a replacement went in without what they carry.
constexpr uint64_t kFreshNs = 1'000'000'000ull;

pthread_t g_thread;  // a pthread, not a std::thread: its creation may fail (no exceptions here),
bool g_running = false;  // and nothing is destroyed at exit (a VMM may exit without close)
bool g_stop = false;

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
          if (s.foreign && !k.foreign) S().counters.foreign_uffd++;
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
            S().counters.dontdump_marked++;
          }
    }
    hold.Release();
    lock.lock();
    S().cv.wait_for(lock, kSpacing, [] { return g_stop; });
  }
}
}  // namespace

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

}  // namespace ras::props
