// The lock a replacement keeps (props.h): the VMM's declaration per region, mlockall(MCL_FUTURE)
// seen by a probe, mlock2 of the replacement, MADV_DONTNEED(_LOCKED); and the counters stats() shows.
#include <errno.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <mutex>

#include "linux_compat.h"
#include "split/props.h"
#include "split/props_table.h"

#ifndef MADV_DONTNEED_LOCKED
#define MADV_DONTNEED_LOCKED 24  // Linux >= 5.18
#endif
#ifndef MLOCK_ONFAULT
#define MLOCK_ONFAULT 1
#endif

namespace ras::props {

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
  S().counters.lock_failures++;
  S().counters.lock_errno = e;
}

int Drop(void* addr, uint64_t len) {
  if (madvise(addr, len, MADV_DONTNEED) == 0) return 0;
  int e = errno;
  if (e != EINVAL) return e;
  // Locked (mlock, or mlockall(MCL_FUTURE) made it so): the kernel needs the locked variant.
  return madvise(addr, len, MADV_DONTNEED_LOCKED) == 0 ? 0 : errno;
}

Counters GetCounters() {
  std::lock_guard<std::mutex> g(S().mu);
  return S().counters;
}

void CountLockedEager() {
  std::lock_guard<std::mutex> g(S().mu);
  S().counters.locked_eager++;
}

}  // namespace ras::props
