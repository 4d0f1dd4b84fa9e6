// Test switch (issue 19): a memory error captured after close()'s drain settled and before the
// region is unmapped. Armed for one region, RemoveRegion poisons its subpage (simulated: an
// action-optional report on the calling thread; real: MADV_HWPOISON, for the lab) right before it
// takes the region out of the capture path: the report is captured, and nothing in JS runs before the unmap. Test-only.
#pragma once

#include <cstdint>

#include "state/state.h"

namespace ras::testing {

void ArmPoisonAtUnmap(uint32_t region_id, uint64_t offset, bool real);
// RemoveRegion, before the region leaves the capture path. Disarms itself.
void AtUnmap(Region& r);

}  // namespace ras::testing
