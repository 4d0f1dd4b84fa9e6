// The C API a VMM's native vCPU loop calls (include/hugetlb_ras.h), and the log of lost frames
// behind its next_lost(). The recovery lanes record every loss here as they find it, before the
// JS side journals it: a vCPU must not wait for the event loop to learn that a frame is gone.
#pragma once

#include <napi.h>

#include <cstdint>

#include "state/state.h"

namespace ras::capi {

// A loss found by the engine: a 4 KiB frame, or a whole huge page (size = huge page size).
// Not signal-safe (takes a lock): called by the recovery lanes and the JS thread.
void RecordLost(const Region& r, uintptr_t hva, uint64_t size, int code);
// Whether a loss covering `hva` of this registration is recorded (same rules).
bool IsRecorded(const Region& r, uintptr_t hva);

// nativeApi(): the table's address as a bigint; uffdInfo(): which userfaultfd the engine opened.
void Register(Napi::Env env, Napi::Object exports);

}  // namespace ras::capi
