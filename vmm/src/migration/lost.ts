// The engine's lost-frame manifest (engine.exportLost / engine.importLost, the contract in
// docs/API.md): reached through the engine object so that this VMM states plainly which engine
// cannot move a VM with lost frames instead of failing to build against it.
import type { RasEngine } from '../../../src/index';

export interface ManifestFrame { guestPhysAddr: string; size: number }
export interface ManifestRegion { name: string; guestPhysAddr: string; size: number; hugePageSize: number; lost: ManifestFrame[] }
export interface LostManifest { format: 'hugetlb-ras-lost'; version: 1; regions: ManifestRegion[] }
export interface ImportResult { imported: number; alreadyLost: number }

interface LostApi {
  exportLost?: () => LostManifest;
  importLost?: (m: unknown) => ImportResult;
}

export function exportLost(engine: RasEngine): LostManifest {
  const f = (engine as unknown as LostApi).exportLost;
  if (typeof f !== 'function') throw new Error('this hugetlb-ras engine has no exportLost(): it cannot say which frames a migrated VM has lost');
  return f.call(engine);
}

export function lostFrames(m: LostManifest): number {
  return m.regions.reduce((a, r) => a + r.lost.reduce((b, f) => b + f.size / 4096, 0), 0);
}

/** importLost(manifest) on the destination; a manifest with no lost frame needs no import. */
export function importLost(engine: RasEngine, m: LostManifest): ImportResult {
  const f = (engine as unknown as LostApi).importLost;
  if (typeof f !== 'function') {
    if (lostFrames(m) === 0) return { imported: 0, alreadyLost: 0 };
    throw new Error('this hugetlb-ras engine has no importLost(): the VM has lost frames and cannot be restored here');
  }
  return f.call(engine, m);
}
