// Replacement memory for a split: a pre-faulted reserve kept ready so a recovery does not pay for
// page faults, else fresh THP-friendly anonymous memory.
#pragma once

#include <cstdint>

namespace ras::mapping {

struct Failure {
  int err = 0;
  const char* syscall = nullptr;
};

// Replacement memory for one huge page, aligned to min(size, 2 MiB) so THP can back it.
struct Block {
  char* addr = nullptr;
  uint64_t size = 0;
  bool from_reserve = false;
};
bool TakeBlock(uint64_t size, Block* out, Failure* fail);
void DropBlock(Block& b);

// The reserve: already-faulted memory kept ready so a recovery does not pay for page faults.
void SetReserveTarget(uint64_t bytes);
void RefillReserve();  // from the lanes' refill thread (or setReserve(bytes, now) on the JS thread)
uint64_t ReserveBytes();
uint64_t ReserveTarget();
void ReleaseReserve();

}  // namespace ras::mapping
