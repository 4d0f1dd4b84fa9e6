// Registration only: each concern registers its own calls.
#include <napi.h>

#include "baseline.h"
#include "engine.h"

namespace {
Napi::Object Init(Napi::Env env, Napi::Object exports) {
  ras::engine::Register(env, exports);
  ras::baseline::Register(env, exports);
  return exports;
}
}  // namespace

NODE_API_MODULE(hugetlb_ras, Init)
