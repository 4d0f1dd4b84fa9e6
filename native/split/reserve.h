// Replacement memory for a split: per page size, a pool of pre-faulted blocks kept ready so a
// recovery does not pay for page faults (else fresh THP-friendly anonymous memory).
#pragma once

#include <cstdint>
#include <vector>

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
// A block of exactly `size`: a ready one from that size's pool, else fresh (not pre-faulted).
bool TakeBlock(uint64_t size, Block* out, Failure* fail);
void DropBlock(Block& b);
// Fresh anonymous memory aligned for THP (MADV_HUGEPAGE), not faulted in.
char* MapAligned(uint64_t size, Failure* fail);

// The reserve: one pool per huge page size, each keeping `depth` whole blocks of that size
// pre-faulted. A block is never carved: a 2 MiB recovery never eats into the 1 GiB pool, and a
// burst of errors on several huge pages finds `depth` blocks ready.
struct Pool {
  uint64_t size = 0;
  uint32_t depth = 0;  // blocks wanted
  uint32_t ready = 0;  // blocks pre-faulted and waiting
  uint64_t taken = 0;  // blocks handed out from this pool since start
  uint64_t missed = 0;  // recoveries of this size that found the pool empty
};
void SetReservePools(const std::vector<Pool>& wanted);  // size and depth of each; others dropped
std::vector<Pool> ReservePools();
// Pre-faults one missing block (smallest size first); false when every pool is full. From the
// lanes' refill thread (or setReserve(..., now) on the JS thread).
bool RefillOne();
void RefillReserve();  // until every pool is full
uint64_t ReserveBytes();   // pre-faulted and ready
uint64_t ReserveTarget();  // sum of size * depth
void ReleaseReserve();

}  // namespace ras::mapping
