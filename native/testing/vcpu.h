// Test-only: a native vCPU load generator: threads that read, verify and write guest memory like vCPUs do,
// stall on a poisoned huge page until the engine has handled it (as after a KVM exit), and turn an
// access to lost memory into an MCE report instead of a crash.
#pragma once

#include <cstdint>
#include <vector>

#include "state/state.h"

namespace ras::vcpu {

struct Options {
  Region* region = nullptr;
  int threads = 1;
  uint64_t seed = 0;
  double write_ratio = 0.25;
  uint64_t window_offset = 0;  // restrict accesses to [window_offset, window_offset+window_len)
  uint64_t window_len = 0;     // 0: the whole region
  uint64_t land_delay_ms = 0;  // tests: each thread pauses after landing from a fault (descheduled there)
};

struct Mce {
  int thread;
  uintptr_t addr;
};

struct Report {
  uint64_t accesses = 0;
  uint64_t wrong_bytes = 0;
  int64_t first_wrong = -1;
  std::vector<std::vector<StallRecord>> stalls;  // per thread
  std::vector<Mce> mces;
};

int Start(const Options& o);  // handle, or -1 when not every thread got a slot
bool Stop(int handle, Report* out);
// Every load, without reports: on environment cleanup (before the regions go) and at exit.
void StopAll();

}  // namespace ras::vcpu
