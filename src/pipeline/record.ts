// Record: a loss is written to the journal first (durable: it survives a VMM restart), then to the
// ledger; only then is it reported. A journal that cannot be written never holds a loss back: the
// ledger entry says `durable: false` and durable.ts reports and retries the write.
import { SUBPAGE } from '../constants';
import type { LostEvent } from '../events';
import type { LostCause, LostPage } from '../ledger/ledger';
import type { LostFrame } from '../ledger/records';
import type { Region } from '../region';
import type { EngineState } from './state';

/** Journal first (durable), then ledger; returns how many frames were new. Never throws for the journal. */
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
  const wallTime = s.durable.wallTime();
  const frames2 = fresh.map(
    (f): LostFrame => ({
      region: region.name,
      guestPhysAddr: region.guestPhysAddrOf(f.offset),
      size: f.size,
      offset: f.offset,
      cause,
      wallTime,
      ...(reason ? { reason } : {}),
    }),
  );
  const pages = fresh.map(
    (f): LostPage => ({
      region: region.name,
      guestPhysAddr: region.guestPhysAddrOf(f.offset),
      hostAddress: region.address + BigInt(f.offset),
      offset: f.offset,
      size: f.size,
      cause,
      hugePageIndex: page,
      durable: false,
      ...(reason ? { reason } : {}),
    }),
  );
  s.durable.append(frames2, pages);
  for (const p of pages) s.ledger.add(p);
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
  s.durable.deliver('lost', event);
}

/**
 * A huge page split with no lost frame to say so: its current data lives only in this process's
 * memory from now on, and the journal must know (a `split` record) so that a successor finds it stale
 * unless it is handed over. Written like a lost frame (retried, never thrown).
 */
export function recordSplit(s: EngineState, region: Region, page: number): void {
  if (!s.journal) return;
  const offset = page * region.hugePageSize;
  const split = { region: region.name, guestPhysAddr: region.guestPhysAddrOf(offset), offset, size: region.hugePageSize, wallTime: s.durable.wallTime() };
  s.durable.append([], [], [split]);
}
