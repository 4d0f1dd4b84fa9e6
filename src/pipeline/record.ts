// Record: a loss is written to the journal first (durable: it survives a VMM restart), then to the
// ledger; only then is it reported.
import { SUBPAGE } from '../constants';
import type { LostEvent } from '../events';
import type { LostCause } from '../ledger/ledger';
import type { LostFrame } from '../ledger/records';
import type { Region } from '../region';
import type { EngineState } from './state';

/** Journal first (durable), then ledger; returns how many frames were new. */
export function record(
  s: EngineState,
  region: Region,
  frames: { offset: number; size: number }[],
  cause: LostCause,
  page: number,
  reason?: string,
): number {
  const fresh = frames.filter((f) => !s.ledger.contains(region.name, f.offset));
  if (fresh.length === 0) return 0;
  const wallTime = new Date().toISOString();
  s.journal?.appendLost(
    fresh.map(
      (f): LostFrame => ({
        region: region.name,
        guestPhysAddr: region.guestPhysAddrOf(f.offset),
        size: f.size,
        offset: f.offset,
        cause,
        wallTime,
        ...(reason ? { reason } : {}),
      }),
    ),
  );
  for (const f of fresh)
    s.ledger.add({
      region: region.name,
      guestPhysAddr: region.guestPhysAddrOf(f.offset),
      hostAddress: region.address + BigInt(f.offset),
      offset: f.offset,
      size: f.size,
      cause,
      hugePageIndex: page,
      ...(reason ? { reason } : {}),
    });
  return fresh.length;
}

export function emitLost(s: EngineState, region: Region, offset: number, cause: LostCause, size = SUBPAGE): void {
  const event: LostEvent = {
    region: region.name,
    guestPhysAddr: region.guestPhysAddrOf(offset),
    hostAddress: region.address + BigInt(offset),
    offset,
    size,
    cause,
  };
  s.events.emit('lost', event);
}
