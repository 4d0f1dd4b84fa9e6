// Test tool: installs a SIGBUS disposition *before* the engine, as a VMM or a crash reporter
// would, so tests can check that the engine chains to it the way the kernel would have called it
// (SIG_IGN, SA_RESETHAND, the handler's sa_mask).
#pragma once

#include <napi.h>

namespace ras::testing {

void RegisterPrevHandler(Napi::Env env, Napi::Object exports);

}  // namespace ras::testing
