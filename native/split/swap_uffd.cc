#include "split/swap_uffd.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <mutex>

#include "split/props.h"
#include "state/state.h"
#include "testing/swap_hold.h"

#ifndef UFFD_USER_MODE_ONLY
#define UFFD_USER_MODE_ONLY 1
#endif

namespace ras::swapfd {

namespace {
std::mutex g_mu;  // one swap at a time on the fd (its events are read by the swap that caused them)
bool g_opened = false;
int g_fd = -1;

// Under g_mu. User-mode-only where allowed: a vCPU's kernel-mode touch of a lost subpage then
// fails at once (EFAULT, as the PROT_NONE it will find does) instead of waiting; healthy memory is
// present and never faults either way.
int Fd() {
  if (g_opened) return g_fd;
  g_opened = true;
  for (int flags : {UFFD_USER_MODE_ONLY, 0}) {
    int fd = static_cast<int>(syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | flags));
    if (fd < 0) continue;
    struct uffdio_api api = {};
    api.api = UFFD_API;
    api.features = UFFD_FEATURE_EVENT_REMAP;
    if (ioctl(fd, UFFDIO_API, &api) == 0 && (api.ioctls & (1ull << _UFFDIO_REGISTER))) {
      g_fd = fd;
      break;
    }
    close(fd);
  }
  return g_fd;
}

struct Reader {
  int fd;
  std::atomic<bool> done{false};
};

// Reads the fd's messages until `done`: the mremap waits until its REMAP event is read. Faults on
// lost subpages are read and left waiting (the swap wakes them once they are guarded).
void* ReadEvents(void* arg) {
  Reader* r = static_cast<Reader*>(arg);
  while (!r->done.load(std::memory_order_acquire)) {
    struct pollfd p = {r->fd, POLLIN, 0};
    if (poll(&p, 1, 1) <= 0) continue;
    struct uffd_msg msgs[16];
    ssize_t n = read(r->fd, msgs, sizeof msgs);
    (void)n;
  }
  return nullptr;
}

// The reader, with no async signal of ours (as SpawnThread). pthread_create, not std::thread: it
// fails with an errno where the process can map no more memory (vm.max_map_count), which is exactly
// when a recovery may run; the caller then takes the way without a userfaultfd.
bool StartReader(Reader* r, pthread_t* t) {
  sigset_t block, old;
  AsyncSignals(&block);
  pthread_sigmask(SIG_BLOCK, &block, &old);
  int e = pthread_create(t, nullptr, ReadEvents, r);
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  return e == 0;
}

// Every message left from this swap (faults on lost subpages after the move) is read, so that
// the next swap starts on an empty queue.
void Discard(int fd) {
  struct uffd_msg msgs[16];
  while (read(fd, msgs, sizeof msgs) > 0) {
  }
}
}  // namespace

Result MoveIn(char* block, uint64_t size, uintptr_t target, const std::vector<uint32_t>& lost, int* err,
              const char** syscall) {
  std::lock_guard<std::mutex> lock(g_mu);
  int fd = Fd();
  if (fd < 0) return kUnavailable;
  // Missing, so that a touch faults to the userfaultfd (never a zero page).
  for (uint32_t s : lost)
    if (props::Drop(block + static_cast<uint64_t>(s) * kSubpage, kSubpage) != 0) return kUnavailable;
  struct uffdio_register reg = {};
  reg.range.start = reinterpret_cast<uintptr_t>(block);
  reg.range.len = size;
  reg.mode = UFFDIO_REGISTER_MODE_MISSING;
  if (ioctl(fd, UFFDIO_REGISTER, &reg) != 0) return kUnavailable;
  Reader rd;
  rd.fd = fd;
  pthread_t reader;
  if (!StartReader(&rd, &reader)) {
    struct uffdio_range rg = {reinterpret_cast<uintptr_t>(block), size};
    ioctl(fd, UFFDIO_UNREGISTER, &rg);
    return kUnavailable;
  }
  void* moved = mremap(block, size, size, MREMAP_MAYMOVE | MREMAP_FIXED, reinterpret_cast<void*>(target));
  int move_errno = errno;
  rd.done.store(true, std::memory_order_release);
  pthread_join(reader, nullptr);
  if (moved == MAP_FAILED) {
    struct uffdio_range rg = {reinterpret_cast<uintptr_t>(block), size};
    ioctl(fd, UFFDIO_UNREGISTER, &rg);
    Discard(fd);
    *err = move_errno;
    *syscall = "mremap";
    return kMoveFailed;
  }
  testing::AtSwapWindow();  // tests only: testing/swap_hold.h
  char* base = reinterpret_cast<char*>(target);
  Result res = kMoved;
  // Still registered: a toucher of a lost subpage waits while its guard goes in.
  for (size_t i = 0; i < lost.size(); i++) {
    size_t j = i;
    while (j + 1 < lost.size() && lost[j + 1] == lost[j] + 1) j++;
    if (mprotect(base + static_cast<uint64_t>(lost[i]) * kSubpage, (lost[j] - lost[i] + 1) * kSubpage, PROT_NONE) != 0) {
      // Each guard costs map entries (vm.max_map_count): what the failure reports (the whole huge
      // page lost) is what a thread finds. One protection over whole VMAs needs no new entry.
      *err = errno;
      *syscall = "mprotect";
      mprotect(base, size, PROT_NONE);
      res = kGuardFailed;
      break;
    }
    i = j;
  }
  struct uffdio_range rg = {target, size};
  if (ioctl(fd, UFFDIO_UNREGISTER, &rg) != 0 && res == kMoved) {
    // A registration left behind would answer nothing: a later touch of a lost subpage that is
    // missing and registered would wait for ever. Inaccessible whole, reported lost whole.
    *err = errno;
    *syscall = "ioctl(UFFDIO_UNREGISTER)";
    mprotect(base, size, PROT_NONE);
    res = kGuardFailed;
  }
  ioctl(fd, UFFDIO_WAKE, &rg);  // whoever touched a lost subpage meanwhile finds its guard now
  Discard(fd);
  return res;
}

}  // namespace ras::swapfd
