// mapRegion(): the region goes live with its policy armed, its journal layout checked and its
// journaled losses re-applied (replay.ts) before the guest can touch it.
import * as fs from 'node:fs';
import { native } from '../native';
import { checkRegionSpec } from '../options';
import { GUARD_CODES, ineligibleReason, reasonCode } from '../policy';
import { hugePagePoolError } from '../pool';
import { Region, type RegionSpec } from '../region';
import { checkNotHandedOver } from './handover';
import { checkIdentity, checkRenamed, consumeHandovers, reprotectFromJournal } from './replay';
import { applyReserve } from './reserve';
import type { EngineState } from './state';

export function mapRegion(s: EngineState, spec: RegionSpec, elsewhere: Region[], readsAround: boolean, addRegion: (r: Region) => void): Region {
  checkNotHandedOver(s, 'mapRegion');
  const sp = checkRegionSpec(spec, [...s.regions.values()], elsewhere);
  // Decided before the mapping exists: the region goes live with its policy armed.
  const reason = ineligibleReason({ share: sp.share, consumers: sp.consumers, kernelReadsAround: readsAround });
  let mapped: ReturnType<typeof native.mapRegion>;
  try {
    mapped = native.mapRegion(sp.path, sp.size, sp.offset, reasonCode(reason), GUARD_CODES[s.guard], sp.guestPhysAddr);
  } catch (err) {
    throw hugePagePoolError(err, sp.name, sp.path, sp.size);
  }
  const region = new Region(
    mapped.id,
    sp.name,
    sp.path,
    mapped.address,
    sp.size,
    sp.offset,
    mapped.hugePageSize,
    sp.guestPhysAddr,
    sp.share,
    sp.consumers,
    reason,
    mapped.bookkeepingBytes,
    `${mapped.dev}:${mapped.ino}`,
  );
  let handedOver: ReturnType<typeof consumeHandovers>;
  const journal = s.journal;
  try {
    if (journal) checkRenamed(s, sp.name, sp.path, sp.offset, sp.size, mapped); // before anything is journaled
    journal?.checkRegion({
      name: sp.name,
      path: sp.path,
      size: sp.size,
      offset: sp.offset,
      guestPhysAddr: sp.guestPhysAddr,
      hugePageSize: mapped.hugePageSize,
    });
    if (journal) checkIdentity(s, sp.name, sp.path, mapped);
    handedOver = consumeHandovers(s, sp.name); // journaled before the pages are re-split
  } catch (err) {
    native.unmapRegion(mapped.id);
    if (mapped.created) fs.rmSync(sp.path, { force: true });
    else if (fs.statSync(sp.path).size > mapped.originalSize) fs.truncateSync(sp.path, mapped.originalSize);
    throw err;
  }
  addRegion(region);
  applyReserve();
  reprotectFromJournal(s, region, handedOver);
  return region;
}
