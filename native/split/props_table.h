// The per-region table the two halves of props (props.h) share: props_lock.cc (the lock, and the
// counters) and props.cc (what smaps says of a region's VMAs, read off the recovery's thread).
#pragma once

#include <condition_variable>
#include <cstdint>
#include <mutex>

#include "split/props.h"
#include "state/state.h"

namespace ras::props {

struct Known {
  uint32_t id = 0;        // the region; 0: a free entry
  uintptr_t start = 0;    // its address (is it still mapped?)
  Lock lock = kUnlocked;  // declared
  bool seen = false;      // smaps was read for it
  bool dontdump = false;  // its huge pages' VMAs carry VM_DONTDUMP
  bool foreign = false;   // ... a userfaultfd registration of the VMM's own
  uint64_t read_ns = 0;   // when smaps was last read for it
  int guard = -1;         // ChosenGuard
};
struct Watch {
  uint32_t id;
  uintptr_t start, end;
};

// Never destroyed: a VMM may exit (process.exit) while the thread waits on the condition, and
// destroying a condition variable with a waiter blocks the exit for good.
// Fixed tables, no allocation: a recovery may run exactly when the process can map no more memory
// (vm.max_map_count), where a new heap chunk would throw std::bad_alloc out of a lane.
constexpr size_t kKnown = 256;  // > kMaxRegions: the oldest registration's entry goes when full
constexpr size_t kQueue = 64;
struct Shared {
  std::mutex mu;  // guards everything here and below; never held across a syscall
  Known known[kKnown];
  Watch queue[kQueue];
  size_t q_head = 0, q_len = 0;
  std::condition_variable cv;
  Counters counters;

  Known* Find(uint32_t id) {
    for (Known& k : known)
      if (k.id == id) return &k;
    return nullptr;
  }
  // An entry for region `id` at `start`: a free one, else one whose region is gone, else the
  // oldest registration's.
  Known& Get(uint32_t id, uintptr_t start) {
    if (Known* k = Find(id)) return *k;
    Known* victim = nullptr;
    for (Known& k : known)
      if (k.id == 0) {
        victim = &k;
        break;
      }
    for (Known& k : known) {
      if (victim) break;
      RegionRef live = RegionRef::Find(k.start);
      if (!live || live->id != k.id) victim = &k;
    }
    if (!victim) {
      victim = &known[0];
      for (Known& k : known)
        if (k.id < victim->id) victim = &k;
    }
    *victim = Known{};
    victim->id = id;
    victim->start = start;
    return *victim;
  }
};

// The one table (never destroyed).
Shared& S();

}  // namespace ras::props
