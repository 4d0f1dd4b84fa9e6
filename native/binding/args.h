// Argument helpers shared by the entry points: cheap re-checks of what TypeScript already
// validated. Each one throws (a coded error) and returns false/null on bad input.
#pragma once

#include <napi.h>

#include <cstdint>

#include "capture/access.h"
#include "state/state.h"

namespace ras::binding {

Region* RegionById(Napi::Env env, const Napi::Value& v);  // a live region, else ERR_REGION_CLOSED
bool Uint(Napi::Env env, const Napi::Value& v, const char* what, uint64_t* out);  // a safe integer >= 0
bool InRange(Napi::Env env, Region& r, uint64_t off, uint64_t len);  // [off, off+len) in the region
// (region id, huge page index) of info[0], info[1]: the region, with *page inside it; else null
// (ERR_REGION_CLOSED, ERR_INVALID_ARG, ERR_OUT_OF_RANGE thrown).
Region* RegionPage(const Napi::CallbackInfo& info, uint32_t* page);
Napi::Value NoSlot(Napi::Env env);  // throws ERR_TOO_MANY_THREADS
Napi::Value FaultObject(Napi::Env env, const access::Fault& f);  // { fault, signal, code }

}  // namespace ras::binding
