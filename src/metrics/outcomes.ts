// Outcomes: the engine's events (poison, then recovered / refused / lost) folded into one record per
// memory error, with the kind of the report that started it. The metrics and the QMP-shaped event log
// both read these, so they count the same errors the same way. Nothing here is invented: an outcome
// whose first report was not seen (the engine opened after it) has kind 'unknown'.
import { SUBPAGE } from '../constants';
import type { RasEngine } from '../engine';
import type { LostEvent, PoisonEvent, RecoveredEvent, RefusedEvent } from '../events';

/** recovered: contained to 4 KiB frames; refused: the whole huge page lost; already_lost: a lost frame touched again; imported: a loss read from the journal or a migration's manifest (importLost). */
export type Outcome = 'recovered' | 'refused' | 'already_lost' | 'imported';
export const OUTCOMES: readonly Outcome[] = ['recovered', 'refused', 'already_lost', 'imported'];
export type ErrorKind = 'AR' | 'AO' | 'unknown';

export interface OutcomeRecord {
  region: string;
  kind: ErrorKind;
  outcome: Outcome;
  /** The huge page size of the region (bytes). */
  pageSize: number;
  /** The frames that are gone (guest physical), each `frameSize` bytes; empty for already_lost. */
  frames: bigint[];
  frameSize: number;
  /** The 4 KiB frame touched again (already_lost), or the huge page. */
  guestPhysAddr: bigint;
  cause: string;
  /** Monotonic: first report to whole page back (filled), and to vCPUs released (stall). */
  durationNs?: bigint;
  stallNs?: bigint;
  path?: 'eager' | 'lazy';
  reason?: string;
  by?: PoisonEvent['by'];
}

export interface OutcomeTracker {
  /** Recoveries reported and not finished, per huge page size. */
  inProgress(): Map<number, number>;
  dispose(): void;
}

/** Calls `on` for every outcome of the engine's memory errors from now on. `on` must not throw. */
export function trackOutcomes(engine: RasEngine, on: (r: OutcomeRecord) => void): OutcomeTracker {
  const pendingHuge = new Map<string, { kind: 'AR' | 'AO'; pageSize: number }>(); // region/hugePageIndex
  const pendingSub = new Map<string, 'AR' | 'AO'>(); // region/offset of a 4 KiB frame of a split page
  const pageSizes = new Map<string, number>();
  const pageSizeOf = (region: string): number => {
    let size = pageSizes.get(region);
    if (size === undefined) {
      const r = engine.isClosed ? undefined : engine.stats().regions.find((x) => x.name === region);
      size = r?.hugePageSize ?? 0;
      if (r) pageSizes.set(region, size);
    }
    return size;
  };
  const onPoison = (e: PoisonEvent) => {
    const hugePageSize = pageSizeOf(e.region);
    if (e.alreadyLost) {
      on({ region: e.region, kind: e.kind, outcome: 'already_lost', pageSize: hugePageSize, frames: [], frameSize: SUBPAGE, guestPhysAddr: e.guestPhysAddr - (e.guestPhysAddr % BigInt(SUBPAGE)), cause: 'touched-again', by: e.by });
      return;
    }
    if (e.pageSize === SUBPAGE) pendingSub.set(`${e.region}/${e.offset - (e.offset % SUBPAGE)}`, e.kind);
    else {
      const key = `${e.region}/${e.hugePageIndex}`;
      if (!pendingHuge.has(key)) pendingHuge.set(key, { kind: e.kind, pageSize: hugePageSize });
    }
  };
  const takeHuge = (region: string, index: number): ErrorKind => {
    const key = `${region}/${index}`;
    const p = pendingHuge.get(key);
    pendingHuge.delete(key);
    return p?.kind ?? 'unknown';
  };
  const onRecovered = (e: RecoveredEvent) => {
    const kind = takeHuge(e.region, e.hugePageIndex);
    on({
      region: e.region,
      kind,
      outcome: 'recovered',
      pageSize: pageSizeOf(e.region),
      frames: e.lostGuestPhysAddrs,
      frameSize: SUBPAGE,
      guestPhysAddr: e.hugePageGuestPhysAddr,
      cause: 'recovered',
      durationNs: e.filledNs,
      stallNs: e.totalNs,
      path: e.path,
    });
  };
  const onRefused = (e: RefusedEvent) => {
    const kind = takeHuge(e.region, e.hugePageIndex);
    on({ region: e.region, kind, outcome: 'refused', pageSize: e.size, frames: [e.hugePageGuestPhysAddr], frameSize: e.size, guestPhysAddr: e.hugePageGuestPhysAddr, cause: 'refused', reason: e.reason });
  };
  const onLost = (e: LostEvent) => {
    if (e.cause === 'split-poison') {
      const key = `${e.region}/${e.offset}`;
      const kind = pendingSub.get(key) ?? 'unknown';
      pendingSub.delete(key);
      on({ region: e.region, kind, outcome: 'recovered', pageSize: pageSizeOf(e.region), frames: [e.guestPhysAddr], frameSize: e.size, guestPhysAddr: e.guestPhysAddr, cause: e.cause });
    } else if (e.cause === 'replayed' || e.cause === 'stale' || e.cause === 'imported') {
      on({ region: e.region, kind: 'unknown', outcome: 'imported', pageSize: pageSizeOf(e.region), frames: [e.guestPhysAddr], frameSize: e.size, guestPhysAddr: e.guestPhysAddr, cause: e.cause });
    }
  };
  engine.on('poison', onPoison);
  engine.on('recovered', onRecovered);
  engine.on('refused', onRefused);
  engine.on('lost', onLost);
  return {
    inProgress() {
      const m = new Map<number, number>();
      for (const p of pendingHuge.values()) m.set(p.pageSize, (m.get(p.pageSize) ?? 0) + 1);
      return m;
    },
    dispose() {
      engine.off('poison', onPoison);
      engine.off('recovered', onRecovered);
      engine.off('refused', onRefused);
      engine.off('lost', onLost);
    },
  };
}
