// A version-1 `lost` line exactly as format.ts writes it, decoded from its bytes without JSON.parse:
// a journal of frames each appended alone (as losses come, one at a time, over a VM's life) is
// 100 000 such lines for 100 000 frames, and a restart reads them all. Anything else (another key
// order, an escape, a non-ASCII byte, a number JSON would not write) returns undefined: the caller
// then parses the line as JSON, so what is accepted here is exactly what JSON.parse would give.
import { LOST_CAUSES, type LostCause } from './ledger';
import type { LostFrame } from './records';

const enc = (s: string): Uint8Array => Buffer.from(s, 'latin1');
const PREFIX = enc('{"v":1,"type":"lost","region":"');
const GPA = enc('","guestPhysAddr":"0x');
const SIZE = enc('","size":');
const OFFSET = enc(',"offset":');
const CAUSE = enc(',"cause":"');
const REASON = enc('","reason":"');
const WALL = enc('","wallTime":"');
const END = enc('"}');
const CAUSES = LOST_CAUSES.map((c) => ({ bytes: enc(c), cause: c }));

/** A cursor over one line's JSON bytes, and the strings seen last (a journal repeats them). */
export class FastLost {
  private buf: Uint8Array = new Uint8Array(0);
  private pos = 0;
  private end = 0;
  private readonly last: { region?: string; wallTime?: string } = {};

  /** The frame of the line's JSON bytes [start, end), or undefined if it is not in the exact form. */
  decode(buf: Uint8Array, start: number, end: number): LostFrame | undefined {
    this.buf = buf;
    this.pos = start;
    this.end = end;
    if (!this.lit(PREFIX)) return undefined;
    const region = this.str('region');
    if (region === undefined || region.length === 0 || !this.lit(GPA)) return undefined;
    const gpa = this.hex();
    if (gpa === undefined || !this.lit(SIZE)) return undefined;
    const size = this.int();
    if (size === undefined || size < 1 || !this.lit(OFFSET)) return undefined;
    const offset = this.int();
    if (offset === undefined || !this.lit(CAUSE)) return undefined;
    const cause = this.cause();
    if (cause === undefined) return undefined;
    let reason: string | undefined;
    if (this.lit(REASON)) {
      reason = this.str();
      if (reason === undefined) return undefined;
    }
    if (!this.lit(WALL)) return undefined;
    const wallTime = this.str('wallTime');
    if (wallTime === undefined || !this.lit(END) || this.pos !== this.end) return undefined;
    const f: LostFrame = { region, guestPhysAddr: BigInt(gpa), size, offset, cause, wallTime };
    if (reason !== undefined) f.reason = reason;
    return f;
  }

  private lit(b: Uint8Array): boolean {
    if (this.pos + b.length > this.end) return false;
    for (let i = 0; i < b.length; i++) if (this.buf[this.pos + i] !== b[i]) return false;
    this.pos += b.length;
    return true;
  }

  /** Printable ASCII up to the next quote (not consumed); no escape. `keep`: reuse the last equal string. */
  private str(keep?: 'region' | 'wallTime'): string | undefined {
    const from = this.pos;
    let i = from;
    for (; i < this.end; i++) {
      const c = this.buf[i];
      if (c === 0x22) break;
      if (c < 0x20 || c === 0x5c || c >= 0x7f) return undefined;
    }
    if (i === this.end) return undefined;
    this.pos = i;
    const prev = keep && this.last[keep];
    if (prev !== undefined && prev.length === i - from) {
      let same = true;
      for (let k = 0; k < prev.length && same; k++) same = prev.charCodeAt(k) === this.buf[from + k];
      if (same) return prev;
    }
    const s = Buffer.from(this.buf.buffer, this.buf.byteOffset + from, i - from).toString('latin1');
    if (keep) this.last[keep] = s;
    return s;
  }

  /** Lowercase hex digits of a number below 2^52 (13 digits), then the closing quote. */
  private hex(): number | undefined {
    let v = 0;
    const from = this.pos;
    for (; this.pos < this.end && this.pos - from <= 13; this.pos++) {
      const c = this.buf[this.pos];
      if (c >= 0x30 && c <= 0x39) v = v * 16 + (c - 0x30);
      else if (c >= 0x61 && c <= 0x66) v = v * 16 + (c - 0x61 + 10);
      else break;
    }
    const n = this.pos - from;
    return n === 0 || n > 13 ? undefined : v;
  }

  /** A JSON integer as JSON.stringify writes a safe one: no sign, no leading zero, at most 15 digits. */
  private int(): number | undefined {
    const from = this.pos;
    let v = 0;
    for (; this.pos < this.end; this.pos++) {
      const c = this.buf[this.pos];
      if (c < 0x30 || c > 0x39) break;
      v = v * 10 + (c - 0x30);
    }
    const n = this.pos - from;
    if (n === 0 || n > 15 || (n > 1 && this.buf[from] === 0x30)) return undefined;
    return v;
  }

  private cause(): LostCause | undefined {
    for (const c of CAUSES) {
      if (this.pos + c.bytes.length < this.end && this.buf[this.pos + c.bytes.length] === 0x22 && this.lit(c.bytes)) return c.cause;
    }
    return undefined;
  }
}
