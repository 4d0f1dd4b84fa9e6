// The soak's model of what the guest memory must hold: per region, the huge pages that are stale for
// this life (lost whole after a restart without a handover), the 4 KiB frames lost, and the blocks
// written since the fill. Shared by the parent (bench/soak.ts) and each life (bench/soak-life.ts)
// through a JSON state file.
export const HUGE = 2 << 20;
export const SUB = 4096;

export interface RegionModel {
  name: string;
  file: string;
  size: number;
  gpa: string;
  stale: number[];
  lost: number[];
  /** offset -> generation of the 4 KiB block written there (see writtenBlock). */
  writes: Record<string, number>;
}

export interface Counts {
  poisons: number;
  recoveries: number;
  resets: number;
  handovers: number;
  restarts: number;
  crashes: number;
  journalFull: number;
  journalErrors: number;
  notDurableSeen: number;
  lostEvents: number;
  poisonsAfterHandover: number;
  handoverRefusedWhileFull: number;
  bytesChecked: number;
  wrong: number;
  forgotten: number;
  invented: number;
  staleSeen: number;
  notes: string[];
}

export interface SoakState {
  seed: number;
  life: number;
  lifeMs: number;
  final: boolean;
  journal: string;
  /** The directory of a small tmpfs holding the journal (root only), else undefined. */
  journalFs?: string;
  regions: RegionModel[];
  counts: Counts;
}

export function newCounts(): Counts {
  return {
    poisons: 0, recoveries: 0, resets: 0, handovers: 0, restarts: 0, crashes: 0, journalFull: 0, journalErrors: 0,
    notDurableSeen: 0, lostEvents: 0, poisonsAfterHandover: 0,
    handoverRefusedWhileFull: 0, bytesChecked: 0, wrong: 0, forgotten: 0, invented: 0, staleSeen: 0, notes: [],
  };
}

/** The bytes of a written block: depend on offset and generation, never equal to the fill. */
export function writtenBlock(offset: number, gen: number): Buffer {
  const b = Buffer.alloc(SUB);
  for (let i = 0; i < SUB; i++) b[i] = (Math.imul(offset + i, 2654435761) >>> 13) ^ (gen * 131) ^ 0x5a;
  return b;
}

const M64 = (1n << 64n) - 1n;
/** native/testing/pattern.h PatternWord, in JS (only for the few written blocks). */
export function patternBlock(seed: number, offset: number): Buffer {
  const b = Buffer.alloc(SUB);
  for (let i = 0; i < SUB / 8; i++) {
    let z = (BigInt(seed) + BigInt(offset + i * 8) * 0x9e3779b97f4a7c15n + 0x632be59bd9b4e019n) & M64;
    z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & M64;
    z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & M64;
    b.writeBigUInt64LE(z ^ (z >> 31n), i * 8);
  }
  return b;
}

export function diffBytes(a: Buffer, b: Buffer): number {
  let n = 0;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) n++;
  return n;
}

/** What lostPages() must hold for a region: `offset:size` keys. */
export function expectedLosses(r: RegionModel): Set<string> {
  const s = new Set<string>();
  for (const h of r.stale) s.add(`${h * HUGE}:${HUGE}`);
  for (const o of r.lost) if (!r.stale.includes(Math.floor(o / HUGE))) s.add(`${o}:${SUB}`);
  return s;
}

/** Region offsets of every 4 KiB that must be unreadable. */
export function expectedUnreadable(r: RegionModel): Set<number> {
  const s = new Set<number>();
  for (const h of r.stale) for (let o = h * HUGE; o < (h + 1) * HUGE; o += SUB) s.add(o);
  for (const o of r.lost) s.add(o);
  return s;
}

/** Huge pages split in this life's process (a lost frame in them, not stale): stale for a successor
 * unless handed over. */
export function splitPages(r: RegionModel): number[] {
  const set = new Set<number>();
  for (const o of r.lost) set.add(Math.floor(o / HUGE));
  for (const h of r.stale) set.delete(h);
  return [...set].sort((a, b) => a - b);
}

/** The life ended without a handover of `handedOver` pages: the others split are stale now. */
export function markStale(r: RegionModel, handedOver: Set<number>): void {
  for (const h of splitPages(r)) {
    if (handedOver.has(h)) continue;
    r.stale.push(h);
    for (const k of Object.keys(r.writes)) if (Math.floor(Number(k) / HUGE) === h) delete r.writes[k];
  }
  r.stale.sort((a, b) => a - b);
}
