// Test tool: what a VMM does to its guest RAM besides using it (issue 19): lock it (mlockall,
// mlock, mlock2 MLOCK_ONFAULT), mark it MADV_DONTDUMP, bind it to NUMA nodes (mbind), and pin it for
// I/O (an io_uring fixed buffer, registered with raw syscalls; O_DIRECT writes from it). Test-only.
#pragma once

#include <napi.h>

namespace ras::testing {

void RegisterMemLock(Napi::Env env, Napi::Object exports);

}  // namespace ras::testing
