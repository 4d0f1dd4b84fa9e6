// Test-only: use up the process's map entries (vm.max_map_count) but `spare`, so the engine's next
// VMA splits fail with ENOMEM as on a VMM with very many mappings. Release() gives them back.
#pragma once

#include <cstdint>

namespace ras::mapcount {

// Returns the number of entries taken, or -1 (errno) when the probe area cannot be mapped.
int64_t Fill(uint32_t spare);
void Release();

}  // namespace ras::mapcount
