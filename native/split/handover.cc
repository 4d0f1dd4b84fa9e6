#include "split/handover.h"

#include <errno.h>
#include <sys/mman.h>

#include <atomic>

#include "capture/access.h"
#include "linux_compat.h"
#include "split/fileio.h"

#ifndef MAP_HUGE_SHIFT
#define MAP_HUGE_SHIFT 26
#endif

namespace ras::handover {

namespace {

// Is a huge page of `size` (2^shift) free in the pool? Takes one (an anonymous MAP_HUGETLB page,
// faulted in) and gives it back at once. A really poisoned huge page leaves the pool when it is
// punched, so the fresh page must come from a free one; asking first keeps a failure harmless.
std::atomic<bool> g_pool_empty{false};  // tests: TestPoolEmpty
std::atomic<uint64_t> g_fail_after{0};  // tests: TestFailCopyAfter (0: off)

bool PoolHasPage(uint64_t size, uint32_t shift, Outcome* out) {
  if (g_pool_empty.load()) {
    out->err = ENOMEM;  // what mmap(MAP_HUGETLB) says when the pool has none
    out->syscall = "mmap(MAP_HUGETLB)";
    return false;
  }
  int flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB | MAP_POPULATE | static_cast<int>(shift << MAP_HUGE_SHIFT);
  void* p = mmap(nullptr, size, PROT_READ | PROT_WRITE, flags, -1, 0);
  if (p == MAP_FAILED) {
    out->err = errno;
    out->syscall = "mmap(MAP_HUGETLB)";
    return false;
  }
  munmap(p, size);
  return true;
}

void Fail(Outcome* out, const char* code, int err, const char* syscall) {
  out->code = code;
  out->err = err;
  out->syscall = syscall;
}

}  // namespace

void TestPoolEmpty(bool on) { g_pool_empty.store(on); }
void TestFailCopyAfter(uint64_t bytes) { g_fail_after.store(bytes); }

Outcome WriteBack(Region& r, uint32_t page) {
  Outcome out;
  const uint64_t size = r.huge_size;
  const uint64_t file_off = r.file_offset + (static_cast<uint64_t>(page) << r.huge_shift);
  const uintptr_t src = r.PageAddress(page);
  if (!PoolHasPage(size, r.huge_shift, &out)) {
    out.code = "ERR_NO_HUGE_PAGE";
    return out;
  }
  int e = fileio::PunchHole(r.fd, r.dev, r.ino, file_off, size);
  if (e != 0) {
    Fail(&out, "ERR_HANDOVER_FAILED", e, "fallocate(PUNCH_HOLE)");
    return out;
  }
  out.punched = true;
  void* fresh = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, r.fd, static_cast<off_t>(file_off));
  if (fresh == MAP_FAILED) {
    int err = errno;
    Fail(&out, err == ENOMEM ? "ERR_NO_HUGE_PAGE" : "ERR_HANDOVER_FAILED", err, "mmap");
    return out;
  }
  char* dst = static_cast<char*>(fresh);
  const uint64_t subpages = size / kSubpage;
  uint64_t run = 0;  // start of the current healthy run
  for (uint64_t s = 0; s <= subpages; s++) {
    bool lost = s < subpages && r.SubpageLost(src + s * kSubpage);
    if (s < subpages && !lost) continue;
    if (s > run) {
      access::Fault f;
      uint64_t len = (s - run) * kSubpage;
      uint64_t fail_after = g_fail_after.load();
      if (fail_after && out.bytes + len > fail_after) {  // tests: the copy stops half way, as a failure would
        uint64_t part = fail_after > out.bytes ? fail_after - out.bytes : 0;
        access::Fault f;
        if (part) access::GuardedCopy(dst + run * kSubpage, reinterpret_cast<const void*>(src + run * kSubpage), part, &f);
        out.bytes += part;
        Fail(&out, "ERR_HANDOVER_FAILED", EIO, "memcpy");
        munmap(fresh, size);
        return out;
      }
      if (!access::GuardedCopy(dst + run * kSubpage, reinterpret_cast<const void*>(src + run * kSubpage), len, &f)) {
        out.fault_addr = f.addr;
        Fail(&out, "ERR_HANDOVER_FAILED", f.signal < 0 ? EBUSY : EIO, "memcpy");
        munmap(fresh, size);
        return out;
      }
      out.bytes += len;
    }
    if (lost) out.lost.push_back(static_cast<uint32_t>(s));
    run = s + 1;
  }
  munmap(fresh, size);
  out.ok = true;
  return out;
}

}  // namespace ras::handover
