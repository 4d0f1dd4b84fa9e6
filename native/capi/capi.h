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
// Recorded once: false (and nothing added) when this very loss is already on record (the dropped-
// report scan and the report itself may both come with it).
bool RecordLost(const Region& r, uintptr_t hva, uint64_t size, int code);
// Whether a loss covering `hva` of this registration is recorded (same rules) and not forgotten.
bool IsRecorded(const Region& r, uintptr_t hva);
// A guest reset gave [hva, hva + len) back: its losses stay in next_lost()'s list (cursors keep
// their meaning) but no longer count as on record, so a new loss there is recorded (and reported) again.
void Forget(const Region& r, uintptr_t hva, uint64_t len);

// nativeApi(): the table's address as a bigint; uffdInfo(): which userfaultfd the engine opened.
void Register(Napi::Env env, Napi::Object exports);

}  // namespace ras::capi
