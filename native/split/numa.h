// NUMA placement of replacement memory: the ordinary pages that stand in for a huge page go on
// the node the huge page was on, so a vCPU pinned near its memory keeps local memory after a split.
// Plain syscalls (get_mempolicy, move_pages, mbind), no libnuma. On a single-node host every call
// here is a no-op (no syscall at all).
#pragma once

#include <cstdint>

#include "state/state.h"

namespace ras::numa {

// More than one memory node online (/sys/devices/system/node/online, read once).
bool MultiNode();

// The node of huge page `page` of `r`: get_mempolicy(MPOL_F_NODE|MPOL_F_ADDR) of the page itself;
// if the kernel cannot say (a really poisoned page has no usable mapping), the node of the nearest
// other huge pages of the region that are populated (move_pages, which faults nothing in). -1 when
// unknown or on a single-node host.
int HugePageNode(Region& r, uint32_t page);

// Prefer `node` for [addr, addr+len) (mbind MPOL_PREFERRED): memory not faulted yet is placed
// there; `faulted` memory (a pre-faulted reserve block) is moved there if it is elsewhere.
// Best effort: nothing fails because of it. No-op for node < 0.
void PlaceOn(char* addr, uint64_t len, int node, bool faulted);

// The memory policy the VMM set on the huge page's VMA (mbind: MPOL_BIND, MPOL_INTERLEAVE, ...), as
// get_mempolicy(MPOL_F_ADDR) answers it (mode with its flags, and the nodemask). `set` is false for
// MPOL_DEFAULT (or where the kernel has no NUMA): then the replacement only prefers the page's node.
struct Policy {
  bool set = false;
  int mode = 0;
  unsigned long mask[16] = {};  // kMaxNode bits
};
Policy PolicyAt(uintptr_t addr);
// The replacement keeps the policy as it was (MPOL_BIND stays BIND, not PREFERRED): mbind with it,
// moving `faulted` memory; without one, PlaceOn(node). Best effort, as PlaceOn.
void PlaceLike(char* addr, uint64_t len, const Policy& p, int node, bool faulted);

}  // namespace ras::numa
