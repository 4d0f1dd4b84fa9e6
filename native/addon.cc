// Registration only. The flow, one folder per stage:
//   capture/   SIGBUS/SIGSEGV handlers: a memory error becomes a report (and guarded access)
//   state/     the shared lock-free state: page states, regions, the report queue, thread slots
//   lanes/     recovery threads: take a report, apply the policy armed for its region
//   split/     read a huge page back, guard lost subpages (uffd, hwpoison, guard pages), swap
//              ordinary pages in its place, the reserve
//   tojs/      events to JS through a ThreadSafeFunction
//   binding/   the JS entry points, one file per group; errors; constants
//   simulate/  simulated poison for machines without CONFIG_MEMORY_FAILURE
//   testing/   test-only native code: vCPU load threads, the pattern, foreign (VMM-like) threads
//   capi/      the C API of include/hugetlb_ras.h for a VMM's native vCPU loop, and its loss log
// (bench/ is a separate addon, hugetlb_ras_bench.)
#include <napi.h>

#include "binding/binding.h"
#include "binding/errors.h"
#include "capi/capi.h"
#include "testing/foreign_thread.h"
#include "testing/memlock.h"
#include "testing/prev_handler.h"

namespace {
Napi::Object Init(Napi::Env env, Napi::Object exports) {
  ras::errors::InitEnv(env);
  ras::errors::Register(env, exports);
  ras::binding::RegisterConstants(env, exports);
  ras::binding::RegisterLifecycle(env, exports);
  ras::binding::RegisterRegions(env, exports);
  ras::binding::RegisterAccess(env, exports);
  ras::binding::RegisterInject(env, exports);
  ras::binding::RegisterRecoveryReset(env, exports);
  ras::binding::RegisterHandover(env, exports);
  ras::binding::RegisterControl(env, exports);
  ras::binding::RegisterLazy(env, exports);
  ras::binding::RegisterMemProps(env, exports);
  ras::binding::RegisterTesting(env, exports);
  ras::binding::RegisterDrain(env, exports);
  ras::binding::RegisterLock(env, exports);
  ras::binding::RegisterImport(env, exports);
  ras::capi::Register(env, exports);                  // nativeApi, uffdInfo
  ras::testing::RegisterForeignThread(env, exports);  // test-only: threads the engine does not know
  ras::testing::RegisterPrevHandler(env, exports);    // test-only: dispositions installed before ours
  ras::testing::RegisterMemLock(env, exports);        // test-only: mlock, mbind, io_uring pins of guest RAM
  return exports;
}
}  // namespace

NODE_API_MODULE(hugetlb_ras, Init)
