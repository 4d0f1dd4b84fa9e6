// exportLost(): every region the engine maps, with every frame lostPages() lists for it (recovered,
// refused, replayed, stale, imported: a stale or refused huge page travels as a whole huge page).
import type { Ledger } from '../ledger/ledger';
import type { Region } from '../region';
import { hex, MANIFEST_FORMAT, MANIFEST_VERSION, type LostManifest, type ManifestRegion } from './manifest';

export function exportLost(regions: Iterable<Region>, ledger: Ledger): LostManifest {
  const out: ManifestRegion[] = [];
  for (const region of regions) {
    out.push({
      name: region.name,
      guestPhysAddr: hex(region.guestPhysAddr),
      size: region.size,
      hugePageSize: region.hugePageSize,
      lost: ledger.ofRegion(region.name).map((p) => ({ guestPhysAddr: hex(p.guestPhysAddr), size: p.size })),
    });
  }
  out.sort((a, b) => (BigInt(a.guestPhysAddr) < BigInt(b.guestPhysAddr) ? -1 : 1));
  return { format: MANIFEST_FORMAT, version: MANIFEST_VERSION, regions: out };
}
