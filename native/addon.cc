// Registration only: each concern registers its own calls.
#include <napi.h>

#include "baseline.h"
#include "capi.h"
#include "testing/foreign_thread.h"
#include "engine.h"

namespace {
Napi::Object Init(Napi::Env env, Napi::Object exports) {
  ras::engine::Register(env, exports);
  ras::baseline::Register(env, exports);
  ras::capi::Register(env, exports);
  ras::testing::RegisterForeignThread(env, exports);
  return exports;
}
}  // namespace

NODE_API_MODULE(hugetlb_ras, Init)
