// The benchmark's reference points, a separate addon (hugetlb_ras_bench) that does not ship in the
// engine: the naive recovery of the 2024 QEMU RFC, and the physical limit (memcpy of the same bytes).
#pragma once

#include <napi.h>

namespace ras::baseline {
void Register(Napi::Env env, Napi::Object exports);
}
