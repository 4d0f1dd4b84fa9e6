/**
 * The journal's on-disk format: one record per line, checksummed. (file.ts: how it is written.)
 *
 * File format (version 4; versions 1 to 3 are read as they are): append-only text, one record per line:
 *
 *     <crc32 of the JSON bytes, 8 lowercase hex digits> <JSON>\n
 *
 * The JSON always carries `"v"` (the format version that introduced its type: 1 for the types below,
 * 2 for the handover records of handover.ts, so a version-1 build refuses a journal holding a
 * handover with ERR_JOURNAL_VERSION instead of serving stale data; it still reads one without) and a `type`:
 *   - `region`: `{ name, path, size, offset, guestPhysAddr, hugePageSize, wallTime }` (first mapping)
 *   - `lost`:   `{ region, guestPhysAddr, size, offset, cause, reason?, wallTime }` (one line per frame)
 *   - `reset`:  `{ region, guestPhysAddr, size, wallTime }`
 *   - `identity`: `{ region, boot, dev, ino, birthMs, wallTime }`: which memory the region is from now on
 *     (a host boot, a backing file); the losses recorded before it for another identity are history
 *   - version 2: `handover`, `handover-done`, `handover-abort`, `resplit` (see handover.ts)
 *   - version 3: `split` (see handover.ts), written only where no lost 4 KiB frame already says that a
 *     huge page lives in private memory, so a journal without one stays readable by a version-2 build
 *   - version 4: `lost-frames` (see lostframes.ts): the frames of one append that share region, size,
 *     cause, reason and time in one line; an append of one frame is still a version-1 `lost` line
 * Bigints are hex strings ("0x1f000"). There is no header record: an empty file is an empty journal.
 */
import { crc32 } from './crc32';
import { FastLost } from './fastlost';
import { decodeLostFrames, lostFramesRecord, runEnd, V4_TYPES, type LostFramesDecoded } from './lostframes';
import { decodeHandover, V2_TYPES, V3_TYPES, type HandoverDecoded, type HandoverPageRecord, type ResplitRecord } from './handover';
import type { LostCause } from './ledger';
import {
  checkString,
  copyLayout,
  describe,
  frameProblem,
  hex,
  identityProblem,
  type RegionIdentity,
  isObject,
  layoutProblem,
  resetProblem,
  type LostFrame,
  type RegionLayout,
  type ResetRecord,
  type SplitPageRecord,
} from './records';

const JOURNAL_FORMAT_VERSION = 4;

function encodeLine(obj: Record<string, unknown>, v = 1): string {
  const json = JSON.stringify({ v, ...obj });
  const crc = crc32(Buffer.from(json, 'utf8')).toString(16).padStart(8, '0');
  return `${crc} ${json}\n`;
}

export function regionLine(l: RegionLayout, wallTime: string): string {
  return encodeLine({
    type: 'region',
    name: l.name,
    path: l.path,
    size: l.size,
    offset: l.offset,
    guestPhysAddr: hex(l.guestPhysAddr),
    hugePageSize: l.hugePageSize,
    wallTime,
  });
}

export function lostLine(f: LostFrame): string {
  const o: Record<string, unknown> = {
    type: 'lost',
    region: f.region,
    guestPhysAddr: hex(f.guestPhysAddr),
    size: f.size,
    offset: f.offset,
    cause: f.cause,
  };
  if (f.reason !== undefined) o.reason = f.reason;
  o.wallTime = f.wallTime;
  return encodeLine(o);
}

/**
 * The lines of an append's frames: each run of frames that share region, size, cause, reason and
 * time is one version-4 `lost-frames` line (lostframes.ts; a run of one: a version-1 `lost` line).
 * `base(region)`: the region's guestPhysAddr (the caller checked every frame's address against it).
 */
export function lostLines(frames: LostFrame[], base: (region: string) => bigint): string {
  let out = '';
  for (let i = 0; i < frames.length; ) {
    const j = runEnd(frames, i);
    out += j - i === 1 ? lostLine(frames[i]) : encodeLine(lostFramesRecord(frames.slice(i, j), base(frames[i].region)), 4);
    i = j;
  }
  return out;
}

export function resetLine(r: ResetRecord): string {
  return encodeLine({
    type: 'reset',
    region: r.region,
    guestPhysAddr: hex(r.guestPhysAddr),
    size: r.size,
    wallTime: r.wallTime,
  });
}

export function identityLine(region: string, id: RegionIdentity, wallTime: string): string {
  return encodeLine({ type: 'identity', region, boot: id.boot, dev: id.dev, ino: id.ino, birthMs: id.birthMs, wallTime });
}

export function handoverLines(pages: HandoverPageRecord[], id: string, wallTime: string): string {
  const lines = pages.map((p) =>
    encodeLine({ type: 'handover', id, region: p.region, guestPhysAddr: hex(p.guestPhysAddr), offset: p.offset, size: p.size, lost: p.lost, wallTime }, 2),
  );
  return lines.join('') + encodeLine({ type: 'handover-done', id, pages: pages.length, wallTime }, 2);
}

export function handoverAbortLine(id: string, wallTime: string): string {
  return encodeLine({ type: 'handover-abort', id, wallTime }, 2);
}

export function splitLine(r: SplitPageRecord): string {
  return encodeLine({ type: 'split', region: r.region, guestPhysAddr: hex(r.guestPhysAddr), offset: r.offset, size: r.size, wallTime: r.wallTime }, 3);
}

export function resplitLine(r: ResplitRecord): string {
  return encodeLine({ type: 'resplit', region: r.region, guestPhysAddr: hex(r.guestPhysAddr), offset: r.offset, size: r.size, wallTime: r.wallTime }, 2);
}

// ---------------------------------------------------------------------------------------------------
// Decoding

/** The value of a lowercase hex digit's byte (what the checksum field allows), else -1. */
function hexDigit(b: number): number {
  if (b >= 0x30 && b <= 0x39) return b - 0x30;
  if (b >= 0x61 && b <= 0x66) return b - 0x61 + 10;
  return -1;
}
const ADDR_RE = /^0x[0-9a-f]+$/;

export type Decoded =
  | { type: 'region'; layout: RegionLayout }
  | { type: 'lost'; frame: LostFrame }
  | LostFramesDecoded
  | { type: 'reset'; reset: ResetRecord }
  | { type: 'identity'; region: string; identity: RegionIdentity }
  | HandoverDecoded;

export class VersionError extends Error {}

const fast = new FastLost();

/**
 * Returns the record of the line buf[start, end) (no newline), or a string describing why the line is
 * bad. Throws VersionError for newer formats. (A range, not a slice: no Buffer object per record on replay.)
 */
export function decodeLine(buf: Buffer, start = 0, end = buf.length): Decoded | string {
  if (end - start < 10 || buf[start + 8] !== 0x20) return 'malformed line (no "<crc32> " prefix)';
  // The stored checksum read off the bytes (8 lowercase hex digits): no string per record on replay.
  let stored = 0;
  for (let i = start; i < start + 8; i++) {
    const d = hexDigit(buf[i]);
    if (d < 0) return 'malformed checksum field';
    stored = stored * 16 + d;
  }
  const actual = crc32(buf.subarray(start + 9, end));
  if (actual !== stored) {
    const crcText = buf.toString('latin1', start, start + 8);
    return `checksum mismatch (stored ${crcText}, computed ${actual.toString(16).padStart(8, '0')})`;
  }
  const frame = fast.decode(buf, start + 9, end); // the common line, without JSON.parse
  if (frame) return { type: 'lost', frame };
  let obj: unknown;
  try {
    obj = JSON.parse(buf.toString('utf8', start + 9, end));
  } catch {
    return 'checksum matches but the JSON does not parse';
  }
  if (!isObject(obj)) return 'record is not a JSON object';
  if (typeof obj.v === 'number' && Number.isSafeInteger(obj.v) && obj.v > JOURNAL_FORMAT_VERSION) {
    throw new VersionError(`record format version ${obj.v} (this build reads version ${JOURNAL_FORMAT_VERSION})`);
  }
  const isV2Type = typeof obj.type === 'string' && V2_TYPES.includes(obj.type);
  const isV3Type = typeof obj.type === 'string' && V3_TYPES.includes(obj.type);
  const isV4Type = typeof obj.type === 'string' && V4_TYPES.includes(obj.type);
  if (obj.v !== 1 && obj.v !== 2 && obj.v !== 3 && obj.v !== 4) return `unsupported record version ${describe(obj.v)}`;
  if (isV2Type && obj.v !== 2) return `a ${obj.type} record must have version 2 (got ${describe(obj.v)})`;
  if (isV3Type && obj.v !== 3) return `a ${obj.type} record must have version 3 (got ${describe(obj.v)})`;
  if (isV4Type && obj.v !== 4) return `a ${obj.type} record must have version 4 (got ${describe(obj.v)})`;
  if (isV4Type) return decodeLostFrames(obj);
  const rec = obj; // fresh from JSON.parse and ours alone: converted in place, no copy per record
  if (rec.guestPhysAddr !== undefined) {
    if (typeof rec.guestPhysAddr !== 'string' || !ADDR_RE.test(rec.guestPhysAddr)) {
      return 'guestPhysAddr is not a hex string';
    }
    rec.guestPhysAddr = BigInt(rec.guestPhysAddr);
  }
  switch (rec.type) {
    case 'region': {
      const p = layoutProblem(rec, 'region record') ?? checkString(rec.wallTime, 'region record.wallTime', true);
      if (p) return p;
      return { type: 'region', layout: copyLayout(rec as unknown as RegionLayout) };
    }
    case 'lost': {
      const p = frameProblem(rec, 'lost record');
      if (p) return p;
      const frame: LostFrame = {
        region: rec.region as string,
        guestPhysAddr: rec.guestPhysAddr as bigint,
        size: rec.size as number,
        offset: rec.offset as number,
        cause: rec.cause as LostCause,
        wallTime: rec.wallTime as string,
      };
      if (rec.reason !== undefined) frame.reason = rec.reason as string;
      return { type: 'lost', frame };
    }
    case 'reset': {
      const p = resetProblem(rec, 'reset record');
      if (p) return p;
      return {
        type: 'reset',
        reset: {
          region: rec.region as string,
          guestPhysAddr: rec.guestPhysAddr as bigint,
          size: rec.size as number,
          wallTime: rec.wallTime as string,
        },
      };
    }
    case 'identity': {
      const p = identityProblem(rec, 'identity record');
      if (p) return p;
      return {
        type: 'identity',
        region: rec.region as string,
        identity: { boot: rec.boot as string, dev: rec.dev as number, ino: rec.ino as number, birthMs: rec.birthMs as number },
      };
    }
    default:
      return isV2Type || isV3Type ? decodeHandover(rec) : `unknown record type ${describe(rec.type)}`;
  }
}


/** True if the file's first bytes can be the start of a journal line (or it is all NUL: a torn first write). */
export function looksLikeJournal(buf: Buffer): boolean {
  if (buf.length === 0) return true;
  if (buf.every((b) => b === 0)) return true;
  const n = Math.min(buf.length, 10);
  for (let i = 0; i < n; i++) {
    const b = buf[i];
    if (i < 8 && !((b >= 0x30 && b <= 0x39) || (b >= 0x61 && b <= 0x66))) return false;
    if (i === 8 && b !== 0x20) return false;
    if (i === 9 && b !== 0x7b) return false;
  }
  return true;
}
