// Guest RAM in the stream, through the engine's guarded copy only (region.readAvailable /
// writeAvailable): never a raw access of guest memory, so a lost frame is a listed offset, not a
// SIGBUS. A lost frame is never sent: its bytes read as zeros here and would land on the
// destination as if they were the guest's.
import type { Region } from '../../../src/index';
import { FRAME, type StreamWriter } from './stream';

const CHUNK = 256 * FRAME; // 1 MiB per read and per RAM record

export interface RamCount {
  /** Frames sent as data. */
  sent: number;
  /** Frames the engine called lost when read: not sent. */
  lost: number;
  /** All-zero frames not sent (the first pass only: a fresh destination file reads zeros). */
  zero: number;
  bytes: number;
}

export const emptyCount = (): RamCount => ({ sent: 0, lost: 0, zero: 0, bytes: 0 });

function isZero(b: Buffer, off: number): boolean {
  for (let i = off; i < off + FRAME; i += 8) if (b.readBigUInt64LE(i) !== 0n) return false;
  return true;
}

/**
 * Sends frames [first, first + count) of a region (frame indices) as RAM records, without the lost
 * frames (and, with skipZero, without all-zero frames).
 */
export async function sendFrames(w: StreamWriter, region: Region, first: number, count: number, skipZero: boolean, c: RamCount): Promise<void> {
  for (let f = first; f < first + count; ) {
    const n = Math.min(CHUNK / FRAME, first + count - f);
    const off = f * FRAME;
    const { data, lostOffsets } = region.readAvailable(off, n * FRAME);
    const lost = new Set(lostOffsets);
    let run = -1; // start (frame index within this chunk) of the run of frames being collected
    const flush = async (end: number) => {
      if (run < 0) return;
      const bytes = data.subarray(run * FRAME, end * FRAME);
      await w.ram(region.guestPhysAddr + BigInt(off + run * FRAME), bytes);
      c.sent += end - run;
      c.bytes += bytes.length;
      run = -1;
    };
    for (let k = 0; k < n; k++) {
      const skip = lost.has(off + k * FRAME) ? 'lost' : skipZero && isZero(data, k * FRAME) ? 'zero' : null;
      if (skip) {
        await flush(k);
        c[skip]++;
      } else if (run < 0) {
        run = k;
      }
    }
    await flush(n);
    f += n;
  }
}

/** Runs of set bits of a KVM dirty bitmap (little-endian qwords): [first frame, count]. */
export function dirtyRuns(bitmap: Buffer, frames: number): [number, number][] {
  const out: [number, number][] = [];
  let start = -1;
  for (let i = 0; i < frames; i++) {
    const set = (bitmap[i >> 3] >> (i & 7)) & 1;
    if (set && start < 0) start = i;
    if (!set && start >= 0) {
      out.push([start, i - start]);
      start = -1;
    }
  }
  if (start >= 0) out.push([start, frames - start]);
  return out;
}

export function countBits(bitmap: Buffer): number {
  let n = 0;
  for (const b of bitmap) for (let x = b; x; x &= x - 1) n++;
  return n;
}

/**
 * Writes a RAM record's frames into the destination region holding them (writeAvailable: a frame
 * already lost here, imported from the manifest, is skipped and keeps its guard). Returns the
 * region offsets it skipped.
 */
export function receiveFrames(regions: Iterable<Region>, gpa: bigint, data: Buffer): number[] {
  for (const r of regions) {
    if (gpa >= r.guestPhysAddr && gpa + BigInt(data.length) <= r.guestPhysAddr + BigInt(r.size)) {
      return r.writeAvailable(Number(gpa - r.guestPhysAddr), data);
    }
  }
  throw new Error(`migration stream: RAM at 0x${gpa.toString(16)} (+${data.length}) is in no region of this VM`);
}
