// The binding: the JS entry points, one file per group, each registering its own calls. Arguments
// are re-checked cheaply (binding/args.h); every error is a RasError (binding/errors.h).
#pragma once

#include <napi.h>

#include <cstdint>
#include <vector>

#include "state/state.h"

namespace ras::binding {

void RegisterConstants(Napi::Env env, Napi::Object exports);      // constants.cc: constants
void RegisterLifecycle(Napi::Env env, Napi::Object exports);      // lifecycle.cc: init, shutdown
void RegisterRegions(Napi::Env env, Napi::Object exports);        // regions.cc: mapRegion, unmapRegion, setPolicy
void RegisterAccess(Napi::Env env, Napi::Object exports);         // access.cc: read, write
void RegisterInject(Napi::Env env, Napi::Object exports);         // inject.cc: hwpoisonProbe, inject*
void RegisterRecoveryReset(Napi::Env env, Napi::Object exports);  // recovery_reset.cc: recoverNow, markLost, restoreHugePage
void RegisterReplay(Napi::Env env, Napi::Object exports);  // replay.cc: recoverMany
void RegisterHandover(Napi::Env env, Napi::Object exports);       // handover.cc: handoverPage
void RegisterControl(Napi::Env env, Napi::Object exports);        // control.cc: pageStates, counters, pause, ...
void RegisterLazy(Napi::Env env, Napi::Object exports);           // lazy.cc: lazyInfo, setLazyRecovery
void RegisterMemProps(Napi::Env env, Napi::Object exports);       // memprops.cc: lockRegion, memPropsInfo
void RegisterTesting(Napi::Env env, Napi::Object exports);        // testing.cc: fill/verifyPattern, vCPU load
void RegisterTestingWindows(Napi::Env env, Napi::Object exports);  // testing_windows.cc: from RegisterTesting
void RegisterLock(Napi::Env env, Napi::Object exports);           // lock.cc: lockFile, unlockFile (the journal's lock)
void RegisterDrain(Napi::Env env, Napi::Object exports);          // drain.cc: drain (close() in flight)
void RegisterImport(Napi::Env env, Napi::Object exports);         // import.cc: importFrames (a migration's lost frames)

// lifecycle.cc, for the other groups
bool EngineOpen();  // an engine of this process is open
// What a region's pages were when it left the capture path for good (no handler, lane or C API
// holds it, none can find it): a memory error captured after close()'s drain is in here.
struct FinalView {
  std::vector<uint8_t> states;  // PageState per huge page
  std::vector<uint64_t> lost;   // region offsets of the lost subpages
};
void RemoveRegion(Region& r, FinalView* out = nullptr);

}  // namespace ras::binding
