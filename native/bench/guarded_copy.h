// The benchmark's guarded-copy row: the C API's copy_from_guest (include/hugetlb_ras.h) over a
// range of guest RAM, against memcpy of the same bytes from the same mapping.
#pragma once

#include <napi.h>

namespace ras::baseline {
void RegisterGuardedCopy(Napi::Env env, Napi::Object exports);
}
