// Reference points for the benchmark, in the same addon so the comparison is fair: the naive
// recovery of the 2024 QEMU RFC, and the physical limit (memcpy of the same bytes).
#pragma once

#include <napi.h>

namespace ras::baseline {
void Register(Napi::Env env, Napi::Object exports);
}
