// The status an operator asks for (`hugetlb-ras status`): regions, lost frames by region, stale pages,
// the reserve, the journal's health, the guard and the recovery path. Built from a running engine
// (served on its status socket) or from a journal alone (what it records; the live parts are absent).
import type { RasEngine } from '../engine';
import type { JournalReplay } from '../ledger/records';
import { sizeLabel, version } from '../metrics/labels';

export interface StatusRegion {
  name: string;
  pageSize: string;
  /** Live only: huge pages mapped, split around a lost frame, lost whole. */
  hugePages?: number;
  splitHugePages?: number;
  lostHugePages?: number;
  lostFrames: number;
  lostBytes: number;
}

export interface StatusStalePage {
  region: string;
  /** Hex string (JSON has no 64-bit integers). */
  guestPhysAddr: string;
  size: number;
}

export interface StatusReport {
  source: 'engine' | 'journal';
  version: string;
  /** The engine's process (live only). */
  pid?: number;
  guard?: string;
  recoveryPath?: string;
  lazyUnavailable?: string;
  reserve?: { bytes: number; targetBytes: number };
  journal?: {
    path: string;
    /** Live: appends that failed, losses not yet in the journal. From a file: records read, damaged records. */
    failedWrites?: number;
    notDurable?: number;
    records?: number;
    warnings?: string[];
    healthy: boolean;
  };
  regions: StatusRegion[];
  /**
   * Live: huge pages whose file data was stale at the replay (split before a restart without a
   * handover). From a journal: split huge pages without a handover (stale at the next open).
   */
  stalePages: StatusStalePage[];
}

const hex = (v: bigint) => '0x' + v.toString(16);

export function engineStatus(engine: RasEngine): StatusReport {
  const s = engine.stats();
  const lost = engine.lostPages();
  return {
    source: 'engine',
    version: version(),
    pid: process.pid,
    guard: s.guard,
    recoveryPath: s.recovery.path,
    ...(s.recovery.lazyUnavailable ? { lazyUnavailable: s.recovery.lazyUnavailable } : {}),
    reserve: { bytes: s.reserveBytes, targetBytes: s.reserveTarget },
    ...(s.journal
      ? { journal: { path: s.journal.path, failedWrites: s.journal.failedWrites, notDurable: s.journal.notDurable, healthy: s.journal.notDurable === 0 } }
      : {}),
    regions: s.regions.map((r) => {
      const mine = lost.filter((p) => p.region === r.name);
      return {
        name: r.name,
        pageSize: sizeLabel(r.hugePageSize),
        hugePages: r.hugePages,
        splitHugePages: r.splitHugePages,
        lostHugePages: r.lostHugePages,
        lostFrames: mine.length,
        lostBytes: mine.reduce((n, p) => n + p.size, 0),
      };
    }),
    stalePages: s.replay.staleHugePages.map((p) => ({ region: p.region, guestPhysAddr: hex(p.hugePageGuestPhysAddr), size: p.size })),
  };
}

export function journalStatus(path: string, replay: JournalReplay): StatusReport {
  const regions: StatusRegion[] = [...replay.regions.values()].map((r) => {
    const mine = replay.lost.filter((f) => f.region === r.name);
    return { name: r.name, pageSize: sizeLabel(r.hugePageSize), lostFrames: mine.length, lostBytes: mine.reduce((n, f) => n + f.size, 0) };
  });
  const handedOver = new Set(replay.handedOver.map((h) => `${h.region}/${h.offset}`));
  const stale = new Map<string, StatusStalePage>();
  for (const f of replay.lost) {
    const layout = replay.regions.get(f.region);
    if (!layout || f.size >= layout.hugePageSize) continue; // a refused page is lost whole, not stale
    const hugeOffset = f.offset - (f.offset % layout.hugePageSize);
    const key = `${f.region}/${hugeOffset}`;
    if (handedOver.has(key) || stale.has(key)) continue;
    stale.set(key, { region: f.region, guestPhysAddr: hex(layout.guestPhysAddr + BigInt(hugeOffset)), size: layout.hugePageSize });
  }
  return {
    source: 'journal',
    version: version(),
    journal: { path, records: replay.records, warnings: replay.warnings.map((w) => `${w.code} at byte ${w.byteOffset}: ${w.message}`), healthy: replay.warnings.length === 0 },
    regions,
    stalePages: [...stale.values()],
  };
}
