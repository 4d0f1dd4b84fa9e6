// The journal's `lost-frames` record (format version 4): `{ region, base, size, cause, reason?,
// wallTime, offsets: [..] }`, the frames of one append that share region, size, cause, reason and
// time, in one line (one checksum and one parse for up to LOST_FRAMES_PER_LINE of them); frame i is
// at `offsets[i]` of the region, guest physical `base + offsets[i]` (base: the region's
// guestPhysAddr). Written only for two or more frames: an append of one frame is a version-1 `lost`
// line, which a version-3 build still reads; a version-3 build refuses this record
// (ERR_JOURNAL_VERSION) rather than miss its losses.
import type { LostCause } from './ledger';
import { describe, frameProblem, hex, type LostFrame } from './records';

/** The record types of format version 4. */
export const V4_TYPES: readonly string[] = ['lost-frames'];
/** At most this many frames in one `lost-frames` line (a line stays small: ~8 bytes per frame). */
export const LOST_FRAMES_PER_LINE = 4096;
const ADDR_RE = /^0x[0-9a-f]+$/;
const MAX_U64 = (1n << 64n) - 1n;

export type LostFramesDecoded = { type: 'lost-frames'; frames: LostFrame[] };

/** Same region, size, cause, reason and wall time: one `lost-frames` line can carry both. */
function sameGroup(a: LostFrame, b: LostFrame): boolean {
  return a.region === b.region && a.size === b.size && a.cause === b.cause && a.reason === b.reason && a.wallTime === b.wallTime;
}

/** Where the run of frames starting at i that one line can carry ends (exclusive). */
export function runEnd(frames: LostFrame[], i: number): number {
  let j = i + 1;
  while (j < frames.length && j - i < LOST_FRAMES_PER_LINE && sameGroup(frames[i], frames[j])) j++;
  return j;
}

/** The record of a run of frames (runEnd), their region based at `base`. */
export function lostFramesRecord(run: LostFrame[], base: bigint): Record<string, unknown> {
  const f = run[0];
  const o: Record<string, unknown> = { type: 'lost-frames', region: f.region, base: hex(base), size: f.size, cause: f.cause };
  if (f.reason !== undefined) o.reason = f.reason;
  o.wallTime = f.wallTime;
  o.offsets = run.map((g) => g.offset);
  return o;
}

/** A `lost-frames` record (version 4) as its frames, or why it is bad. */
export function decodeLostFrames(rec: Record<string, unknown>): LostFramesDecoded | string {
  if (typeof rec.base !== 'string' || !ADDR_RE.test(rec.base)) return 'lost-frames record.base is not a hex string';
  const offsets = rec.offsets;
  if (!Array.isArray(offsets) || offsets.length === 0) return 'lost-frames record.offsets must be a non-empty array';
  const base = BigInt(rec.base);
  // Checked once with the first frame's address, then per frame only what differs: the offset.
  const first = { ...rec, guestPhysAddr: base + BigInt(typeof offsets[0] === 'number' && Number.isSafeInteger(offsets[0]) ? offsets[0] : 0), offset: offsets[0] };
  const p = frameProblem(first, 'lost-frames record');
  if (p) return p;
  const region = rec.region as string;
  const size = rec.size as number;
  const cause = rec.cause as LostCause;
  const wallTime = rec.wallTime as string;
  const reason = rec.reason as string | undefined;
  const frames: LostFrame[] = new Array(offsets.length);
  for (let i = 0; i < offsets.length; i++) {
    const offset = offsets[i];
    if (typeof offset !== 'number' || !Number.isSafeInteger(offset) || offset < 0) return `lost-frames record.offsets[${i}] must be an integer >= 0 (got ${describe(offset)})`;
    const guestPhysAddr = base + BigInt(offset);
    if (guestPhysAddr > MAX_U64) return `lost-frames record.offsets[${i}]: base + offset exceeds the 64-bit address space`;
    const f: LostFrame = { region, guestPhysAddr, size, offset, cause, wallTime };
    if (reason !== undefined) f.reason = reason;
    frames[i] = f;
  }
  return { type: 'lost-frames', frames };
}
