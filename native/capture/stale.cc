#include "capture/stale.h"

#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include <atomic>

namespace ras::stale {

namespace {
constexpr int kRetryEntries = 256;
struct RetryEntry {
  std::atomic<int> tid{0};
  std::atomic<uintptr_t> addr{0};
  std::atomic<uint32_t> word{0};
};
RetryEntry g_retry[kRetryEntries];
}  // namespace

bool FirstUnexplainedFault(int tid, uintptr_t addr, uint32_t word) {
  RetryEntry& e = g_retry[static_cast<unsigned>(tid) % kRetryEntries];
  if (e.tid.load() == tid && e.addr.load() == addr && e.word.load() == word) {
    e.addr.store(0);
    return false;
  }
  e.tid.store(tid);
  e.addr.store(addr);
  e.word.store(word);
  return true;
}

bool KernelCanRead(uintptr_t addr) {
  char byte;
  struct iovec local = {&byte, 1};
  struct iovec remote = {reinterpret_cast<void*>(addr), 1};
  return syscall(SYS_process_vm_readv, getpid(), &local, 1UL, &remote, 1UL, 0UL) == 1;
}

}  // namespace ras::stale
