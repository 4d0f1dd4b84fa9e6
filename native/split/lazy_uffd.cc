#include "split/lazy_uffd.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <mutex>

#include "state/state.h"

// Debian 12's kernel headers (6.1) predate UFFDIO_POISON (6.6) and UFFDIO_MOVE (6.8).
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
#ifndef UFFD_FEATURE_MOVE
#define UFFD_FEATURE_MOVE (1 << 16)
#endif
#ifndef UFFDIO_MOVE
struct uffdio_move {
  __u64 dst;
  __u64 src;
  __u64 len;
  __u64 mode;
  __s64 move;
};
#define _UFFDIO_MOVE (0x05)
#define UFFDIO_MOVE _IOWR(UFFDIO, _UFFDIO_MOVE, struct uffdio_move)
#endif
#ifndef USERFAULTFD_IOC_NEW
#define USERFAULTFD_IOC_NEW _IO(0xAA, 0x00)
#endif

namespace ras::lazyfd {

namespace {
thread_local void (*t_on_eagain)() = nullptr;

// Every retry is bounded: EAGAIN lasts while an mremap waits for its event to be read (the fault
// thread reads them, and no lock of ours is held across these calls), so a few milliseconds; past
// kAgainNs the caller gets EAGAIN and treats it as any failure of that call.
constexpr uint64_t kAgainNs = 2'000'000'000ull;

// False once `*deadline` (set on the first call) has passed.
bool Again(uint64_t* deadline) {
  uint64_t now = MonotonicNs();
  if (*deadline == 0) *deadline = now + kAgainNs;
  if (now > *deadline) return false;
  if (t_on_eagain)
    t_on_eagain();
  else
    usleep(20);
  return true;
}

std::mutex g_mu;
bool g_opened = false;
int g_fd = -1;
Info g_info;

// EVENT_REMAP: the registered empty range keeps its registration when mremap puts it in place;
// POISON for the markers; MOVE to take touched pieces back into the block that replaces it.
constexpr uint64_t kFeatures = UFFD_FEATURE_EVENT_REMAP | UFFD_FEATURE_POISON | UFFD_FEATURE_MOVE;

// A full userfaultfd: the syscall without UFFD_USER_MODE_ONLY (needs the sysctl or
// CAP_SYS_PTRACE), else /dev/userfaultfd (needs access to the device node).
int OpenFull(Info* info) {
  int fd = static_cast<int>(syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK));
  if (fd >= 0) return fd;
  int e = errno;
  int dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
  if (dev >= 0) {
    fd = ioctl(dev, USERFAULTFD_IOC_NEW, O_CLOEXEC | O_NONBLOCK);
    int e2 = errno;
    close(dev);
    if (fd >= 0) return fd;
    e = e2;
  }
  *info = {false, e, "userfaultfd",
           "no full userfaultfd (kernel-mode faults): needs /dev/userfaultfd access, vm.unprivileged_userfaultfd=1 or CAP_SYS_PTRACE"};
  return -1;
}
}  // namespace

Info Open() {
  std::lock_guard<std::mutex> lock(g_mu);
  if (g_opened) return g_info;
  g_opened = true;
  Info info;
  int fd = OpenFull(&info);
  if (fd < 0) {
    g_info = info;
    return g_info;
  }
  struct uffdio_api api = {};
  api.api = UFFD_API;
  api.features = kFeatures;
  if (ioctl(fd, UFFDIO_API, &api) != 0 || (api.features & kFeatures) != kFeatures) {
    int e = errno ? errno : ENOTSUP;
    close(fd);
    g_info = {false, e, "ioctl(UFFDIO_API)", "the kernel lacks UFFDIO_MOVE (Linux >= 6.8), UFFDIO_POISON (6.6) or EVENT_REMAP"};
    return g_info;
  }
  g_fd = fd;
  g_info = {true, 0, nullptr, nullptr};
  return g_info;
}

Info Current() {
  std::lock_guard<std::mutex> lock(g_mu);
  return g_info;
}

int Fd() {
  std::lock_guard<std::mutex> lock(g_mu);
  return g_fd;
}

void Close() {
  std::lock_guard<std::mutex> lock(g_mu);
  if (g_fd >= 0) close(g_fd);
  g_fd = -1;
  g_opened = false;
  g_info = Info{};
}

int Register(uintptr_t addr, uint64_t len) {
  struct uffdio_register reg = {};
  reg.range = {addr, len};
  reg.mode = UFFDIO_REGISTER_MODE_MISSING;
  return ioctl(Fd(), UFFDIO_REGISTER, &reg) == 0 ? 0 : errno;
}

int Unregister(uintptr_t addr, uint64_t len) {
  struct uffdio_range rg = {addr, len};
  return ioctl(Fd(), UFFDIO_UNREGISTER, &rg) == 0 ? 0 : errno;
}

int Copy(uintptr_t dst, uintptr_t src, uint64_t len) {
  uint64_t done = 0, deadline = 0;
  while (done < len) {
    struct uffdio_copy cp = {dst + done, src + done, len - done, 0, 0};
    if (ioctl(Fd(), UFFDIO_COPY, &cp) == 0) return 0;
    int e = errno;
    if (cp.copy > 0) done += static_cast<uint64_t>(cp.copy);
    if (e == EEXIST) {
      done += 4096;  // present already: its data is there
      continue;
    }
    if (e == EAGAIN) {
      if (cp.copy <= 0 && !Again(&deadline)) return EAGAIN;
      continue;
    }
    return e;
  }
  return 0;
}

int MoveBack(uintptr_t dst, uintptr_t src, uint64_t len) {
  constexpr uint64_t kAllowSrcHoles = 1ull << 1;  // UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES: a dropped page stays dropped
  uint64_t done = 0, deadline = 0;
  int busy = 0;
  while (done < len) {
    struct uffdio_move mv = {dst + done, src + done, len - done, kAllowSrcHoles, 0};
    if (ioctl(Fd(), UFFDIO_MOVE, &mv) == 0) return 0;
    int e = errno;
    if (mv.move > 0) done += static_cast<uint64_t>(mv.move);
    if (e == EBUSY && ++busy < 100) {
      // EBUSY: a page pinned for a moment (O_DIRECT I/O into guest memory) or a folio being split:
      // up to ~10 ms; a page pinned for longer (an io_uring fixed buffer) stays where it is (the
      // caller finishes in place).
      if (mv.move <= 0) usleep(100);
      continue;
    }
    if (e == EAGAIN) {
      if (mv.move <= 0 && !Again(&deadline)) return EAGAIN;
      continue;
    }
    return e;
  }
  return 0;
}

int Poison(uintptr_t addr, uint64_t len) {
  struct uffdio_poison po = {};
  po.range = {addr, len};
  uint64_t deadline = 0;
  for (;;) {
    if (ioctl(Fd(), UFFDIO_POISON, &po) == 0) return 0;
    if (errno != EAGAIN) return errno;
    if (!Again(&deadline)) return EAGAIN;
  }
}

int ZeroPage(uintptr_t addr, uint64_t len) {
  struct uffdio_zeropage zp = {};
  zp.range = {addr, len};
  uint64_t deadline = 0;
  for (;;) {
    if (ioctl(Fd(), UFFDIO_ZEROPAGE, &zp) == 0) return 0;
    if (errno != EAGAIN) return errno;
    if (!Again(&deadline)) return EAGAIN;
  }
}

void SetEagainHook(void (*hook)()) { t_on_eagain = hook; }

int Wake(uintptr_t addr, uint64_t len) {
  struct uffdio_range rg = {addr, len};
  return ioctl(Fd(), UFFDIO_WAKE, &rg) == 0 ? 0 : errno;
}

}  // namespace ras::lazyfd
