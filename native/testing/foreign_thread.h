// Test tool: a stand-in for a VMM. It installs its own SIGBUS handler (before the engine, as QEMU
// does), runs a thread the engine knows nothing about (like a vCPU thread in KVM_RUN) that reads
// guest memory, and calls the engine's C API through the table, exactly as a VMM's native code
// would. It shows what such a VMM receives: which SIGBUSes, with which siginfo and ucontext.
#pragma once

#include <napi.h>

namespace ras::testing {

void RegisterForeignThread(Napi::Env env, Napi::Object exports);  // and the two below
void RegisterCapiCalls(Napi::Env env, Napi::Object exports);     // capi_calls.cc: the C API from a thread
void RegisterStraySignals(Napi::Env env, Napi::Object exports);  // stray.cc: stray signals, held handlers

}  // namespace ras::testing
