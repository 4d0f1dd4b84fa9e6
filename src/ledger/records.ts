// The records of the journal as values, and the checks every record passes (on append, where a
// failure is ERR_INVALID_ARG, and on replay, where a checksummed record that fails is a bad record).
import { LOST_CAUSES, type LostCause } from './ledger';

export interface RegionLayout {
  name: string;
  path: string;
  size: number;
  offset: number;
  guestPhysAddr: bigint;
  hugePageSize: number;
}

export interface LostFrame {
  region: string;
  guestPhysAddr: bigint;
  /** 4096 or a whole huge page */
  size: number;
  /** byte offset in the region */
  offset: number;
  cause: LostCause;
  reason?: string;
  /** ISO date, for humans only */
  wallTime: string;
}

export interface ResetRecord {
  region: string;
  guestPhysAddr: bigint;
  size: number;
  wallTime: string;
}

export interface HandoverPageRecord {
  id: string;
  region: string;
  guestPhysAddr: bigint;
  /** byte offset of the huge page in the region */
  offset: number;
  /** the huge page size */
  size: number;
  /** lost 4 KiB frames in it (zero in the file, still lost) */
  lost: number;
  wallTime: string;
}

/**
 * A huge page whose current data lived only in a process's private memory (format version 3 `split`
 * record: a recovery split it, a reset fell back to anonymous memory, a restart re-split it), and that
 * no later complete handover or reset covers: its data in the file is stale for a successor.
 */
export interface SplitPageRecord {
  region: string;
  guestPhysAddr: bigint;
  /** byte offset of the huge page in the region */
  offset: number;
  /** the huge page size */
  size: number;
  wallTime: string;
}

/** A huge page whose data in the backing file is current (a valid handover), from the journal. */
export type HandedOverPage = HandoverPageRecord;

export interface JournalWarning {
  code: 'ERR_JOURNAL_TORN_TAIL' | 'ERR_JOURNAL_BAD_RECORD';
  byteOffset: number;
  message: string;
}

/**
 * Which memory a region's losses belong to: the host's boot and the backing file (dev, ino, and the
 * birth time where the file system has one, else 0). Another boot, or the file deleted and created
 * again, is fresh memory: the losses recorded before are history.
 */
export interface RegionIdentity {
  boot: string;
  dev: number;
  ino: number;
  birthMs: number;
}

/** A loss recorded for an earlier incarnation of a region (before a reboot, or another file). */
export interface HistoricLoss extends LostFrame {
  /** Why it is not applied: which incarnation it was recorded for. */
  why: string;
}

export interface JournalReplay {
  regions: Map<string, RegionLayout>;
  /**
   * net: frames lost and not cleared by a later reset record covering them, for the incarnation of
   * each region recorded last (mapRegion moves them to `history` if the memory is another one now)
   */
  lost: LostFrame[];
  /** Losses of earlier incarnations of a region (another boot, a recreated file): not applied. */
  history: HistoricLoss[];
  /** The incarnation recorded last per region. */
  identities: Map<string, RegionIdentity>;
  warnings: JournalWarning[];
  /** good records read */
  records: number;
  /**
   * Huge pages whose data in the backing file is current: their last record is a completed,
   * unaborted handover (ledger/handover.ts). A page split before the restart and not here has
   * stale data in the file (frozen at the poison). mapRegion uses each up (a `resplit` record).
   */
  handedOver: HandedOverPage[];
  /** Huge pages split (private memory) and not handed over since: stale for this life (version 3). */
  split: SplitPageRecord[];
}

const LAYOUT_FIELDS = ['path', 'size', 'offset', 'guestPhysAddr', 'hugePageSize'] as const;
const MAX_U64 = (1n << 64n) - 1n;

export const hex = (v: bigint): string => '0x' + v.toString(16);

export function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

export function checkString(v: unknown, what: string, allowEmpty = false): string | undefined {
  if (typeof v !== 'string') return `${what} must be a string`;
  if (!allowEmpty && v.length === 0) return `${what} must not be empty`;
  return undefined;
}

function checkInt(v: unknown, what: string, min: number): string | undefined {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min) {
    return `${what} must be an integer >= ${min} (got ${describe(v)})`;
  }
  return undefined;
}

function checkAddr(v: unknown, what: string): string | undefined {
  if (typeof v !== 'bigint' || v < 0n || v > MAX_U64) {
    return `${what} must be a bigint in [0, 2^64) (got ${describe(v)})`;
  }
  return undefined;
}

export function describe(v: unknown): string {
  if (typeof v === 'bigint') return `${v}n`;
  if (typeof v === 'string') return JSON.stringify(v);
  if (typeof v === 'number' || typeof v === 'boolean' || v === null || v === undefined) return String(v);
  return typeof v;
}

function firstProblem(...checks: (string | undefined)[]): string | undefined {
  return checks.find((c) => c !== undefined);
}

export function layoutProblem(l: unknown, what: string): string | undefined {
  if (!isObject(l)) return `${what} must be an object`;
  const p = firstProblem(
    checkString(l.name, `${what}.name`),
    checkString(l.path, `${what}.path`),
    checkInt(l.size, `${what}.size`, 1),
    checkInt(l.offset, `${what}.offset`, 0),
    checkAddr(l.guestPhysAddr, `${what}.guestPhysAddr`),
    checkInt(l.hugePageSize, `${what}.hugePageSize`, 1),
  );
  if (p) return p;
  if ((l.guestPhysAddr as bigint) + BigInt(l.size as number) - 1n > MAX_U64) {
    return `${what}: guestPhysAddr + size exceeds the 64-bit address space`;
  }
  return undefined;
}

export function frameProblem(f: unknown, what: string): string | undefined {
  if (!isObject(f)) return `${what} must be an object`;
  return firstProblem(
    checkString(f.region, `${what}.region`),
    checkAddr(f.guestPhysAddr, `${what}.guestPhysAddr`),
    checkInt(f.size, `${what}.size`, 1),
    checkInt(f.offset, `${what}.offset`, 0),
    LOST_CAUSES.includes(f.cause as LostCause)
      ? undefined
      : `${what}.cause must be one of ${LOST_CAUSES.join(', ')} (got ${describe(f.cause)})`,
    f.reason === undefined ? undefined : checkString(f.reason, `${what}.reason`, true),
    checkString(f.wallTime, `${what}.wallTime`, true),
  );
}

export function resetProblem(r: unknown, what: string): string | undefined {
  if (!isObject(r)) return `${what} must be an object`;
  return firstProblem(
    checkString(r.region, `${what}.region`),
    checkAddr(r.guestPhysAddr, `${what}.guestPhysAddr`),
    checkInt(r.size, `${what}.size`, 1),
    checkString(r.wallTime, `${what}.wallTime`, true),
  );
}

export function copyLayout(l: RegionLayout): RegionLayout {
  return {
    name: l.name,
    path: l.path,
    size: l.size,
    offset: l.offset,
    guestPhysAddr: l.guestPhysAddr,
    hugePageSize: l.hugePageSize,
  };
}

export function sameLayout(a: RegionLayout, b: RegionLayout): boolean {
  return LAYOUT_FIELDS.every((k) => a[k] === b[k]);
}

interface LayoutDifference {
  field: (typeof LAYOUT_FIELDS)[number];
  journal: string | number | bigint;
  requested: string | number | bigint;
  text: string;
}

export function layoutDiff(old: RegionLayout, now: RegionLayout): LayoutDifference[] {
  const out: LayoutDifference[] = [];
  for (const field of LAYOUT_FIELDS) {
    if (old[field] === now[field]) continue;
    const show = (v: string | number | bigint): string =>
      typeof v === 'bigint' ? hex(v) : typeof v === 'string' ? JSON.stringify(v) : String(v);
    out.push({
      field,
      journal: old[field],
      requested: now[field],
      text: `${field}: journal has ${show(old[field])}, now ${show(now[field])}`,
    });
  }
  return out;
}

/** Birth times differ only where both are known (0: unknown; never a ctime standing in for one). */
function birthDiffers(a: RegionIdentity, b: RegionIdentity): boolean {
  return a.birthMs !== 0 && b.birthMs !== 0 && a.birthMs !== b.birthMs;
}

export function sameIdentity(a: RegionIdentity, b: RegionIdentity): boolean {
  return a.boot === b.boot && a.dev === b.dev && a.ino === b.ino && !birthDiffers(a, b);
}

/** Why memory `now` is not the memory `then` (undefined: the same). */
export function identityChange(then: RegionIdentity, now: RegionIdentity): string | undefined {
  if (then.boot !== now.boot) return `recorded in another boot of the host (boot id ${then.boot}); the memory is fresh`;
  if (then.dev !== now.dev || then.ino !== now.ino || birthDiffers(then, now))
    return `recorded for another backing file (dev ${then.dev}, inode ${then.ino}); the file was created again`;
  return undefined;
}

export function identityProblem(r: Record<string, unknown>, what: string): string | undefined {
  return firstProblem(
    checkString(r.region, `${what}.region`),
    checkString(r.boot, `${what}.boot`),
    checkInt(r.dev, `${what}.dev`, 0),
    checkInt(r.ino, `${what}.ino`, 0),
    checkInt(r.birthMs, `${what}.birthMs`, 0),
    checkString(r.wallTime, `${what}.wallTime`, true),
  );
}
