#include "split/uffd.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <mutex>

#include "split/props.h"

// Debian 12's kernel headers (6.1) predate UFFDIO_POISON (6.6) and may predate user-mode-only.
#ifndef UFFD_USER_MODE_ONLY
#define UFFD_USER_MODE_ONLY 1
#endif
#ifndef UFFD_FEATURE_POISON
#define UFFD_FEATURE_POISON (1 << 14)
#endif
#ifndef UFFDIO_POISON
struct uffdio_poison {
  struct uffdio_range range;
  __u64 mode;
  __s64 updated;
};
#define _UFFDIO_POISON (0x08)
#define UFFDIO_POISON _IOWR(UFFDIO, _UFFDIO_POISON, struct uffdio_poison)
#endif

namespace ras::uffd {

namespace {
std::mutex g_mu;
bool g_opened = false;
int g_fd = -1;
Info g_info;

// The API handshake with the poison feature; closes fd and returns the errno on failure.
int Handshake(int fd) {
  struct uffdio_api api = {};
  api.api = UFFD_API;
  api.features = UFFD_FEATURE_POISON;
  if (ioctl(fd, UFFDIO_API, &api) != 0) return errno;
  if (!(api.ioctls & (1ull << _UFFDIO_REGISTER))) return ENOTSUP;
  return 0;
}

int TryOpen(int flags, Info* info) {
  int fd = static_cast<int>(syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | flags));
  if (fd < 0) {
    *info = {kNone, errno, "userfaultfd"};
    return -1;
  }
  int e = Handshake(fd);
  if (e) {
    close(fd);
    *info = {kNone, e, "ioctl(UFFDIO_API)"};
    return -1;
  }
  return fd;
}
}  // namespace

Info Open() {
  std::lock_guard<std::mutex> lock(g_mu);
  if (g_opened) return g_info;
  g_opened = true;
  // A marker needs no kernel-mode fault handling: prefer the kind any user may open.
  Info tried;
  int fd = TryOpen(UFFD_USER_MODE_ONLY, &tried);
  if (fd >= 0) {
    g_fd = fd;
    g_info = {kUserModeOnly, 0, nullptr};
    return g_info;
  }
  Info full;
  fd = TryOpen(0, &full);
  if (fd >= 0) {
    g_fd = fd;
    g_info = {kFull, 0, nullptr};
    return g_info;
  }
  g_info = tried;  // the user-mode-only failure says most about what is missing
  return g_info;
}

Info Current() {
  std::lock_guard<std::mutex> lock(g_mu);
  return g_info;
}

void Close() {
  std::lock_guard<std::mutex> lock(g_mu);
  if (g_fd >= 0) close(g_fd);
  g_fd = -1;
  g_opened = false;
  g_info = Info{};
}

namespace {
std::atomic<int> g_fail_next{0};
}

void TestFailNext(int err) { g_fail_next.store(err); }

int PoisonRange(char* addr, uint64_t len, bool in_place, const char** syscall_out) {
  int fd;
  {
    std::lock_guard<std::mutex> lock(g_mu);
    fd = g_fd;
  }
  if (fd < 0) {
    *syscall_out = "userfaultfd";
    return ENODEV;
  }
  struct uffdio_register reg = {};
  reg.range.start = reinterpret_cast<uintptr_t>(addr);
  reg.range.len = len;
  reg.mode = UFFDIO_REGISTER_MODE_MISSING;
  int forced = g_fail_next.exchange(0);
  if (forced || ioctl(fd, UFFDIO_REGISTER, &reg) != 0) {
    int e = forced ? forced : errno;  // EBUSY: a lazy fill has the range registered (split/lazy.h)
    *syscall_out = "ioctl(UFFDIO_REGISTER)";
    if (in_place) mprotect(addr, len, PROT_NONE);  // the caller reports a fault guard: make it one (checked there)
    return e;
  }
  int err = 0;
  // UFFDIO_POISON never replaces a present page (EEXIST): drop the range first. A thread that
  // touches it in between waits in the kernel until the marker is in (POISON wakes it).
  if ((err = props::Drop(addr, len)) != 0) {
    *syscall_out = "madvise(MADV_DONTNEED)";
  } else {
    struct uffdio_poison po = {};
    po.range.start = reinterpret_cast<uintptr_t>(addr);
    po.range.len = len;
    if (ioctl(fd, UFFDIO_POISON, &po) != 0) {
      err = errno;
      *syscall_out = "ioctl(UFFDIO_POISON)";
    }
  }
  // In place, a dropped page must never read as zeros: while the range is still registered a
  // toucher waits, so guard it before the registration goes.
  if (err && in_place) mprotect(addr, len, PROT_NONE);
  struct uffdio_range rg = {reinterpret_cast<uintptr_t>(addr), len};
  if (ioctl(fd, UFFDIO_UNREGISTER, &rg) != 0 && !err) {
    err = errno;
    *syscall_out = "ioctl(UFFDIO_UNREGISTER)";
  }
  return err;
}

}  // namespace ras::uffd
