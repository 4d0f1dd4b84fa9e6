// A faulting thread waiting in the signal handler for the lanes to finish with its huge page, as a
// vCPU waits after a KVM exit. The thread holds the region (RegionRef) meanwhile; removal sets
// `removed` and wakes the page words, so every wait here ends. Async-signal-safe (futex, clock).
#pragma once

#include <cstdint>

#include "state/state.h"

namespace ras::signals::wait {

// Block until the page is no longer Pending or Recovering (or the region goes, or the engine
// shuts down). False if the vCPU was asked to stop meanwhile. Without a VcpuLog (a thread the
// engine has no slot for): bounded (HUGETLB_RAS_FOREIGN_WAIT_MS, paused engine or not): false
// after the bound, or when another signal's handler ran on the thread (a kick).
bool WaitHandled(Region& r, uint32_t page, const VcpuLog* vcpu);

// Like WaitHandled for a guarded accessor: false when `ms` passed first or the engine was paused.
bool WaitHandledFor(Region& r, uint32_t page, int ms);

}  // namespace ras::signals::wait
