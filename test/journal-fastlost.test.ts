// The byte decoder of version-1 `lost` lines (ledger/fastlost.ts) gives what JSON.parse gives, and
// leaves every other form to it: the replay of a journal is the same with or without it.
import { describe, expect, it } from 'vitest';
import { crc32 } from 'zlib';
import { decodeLine, lostLine } from '../src/ledger/format';
import { FastLost } from '../src/ledger/fastlost';
import type { LostFrame } from '../src/ledger/records';

const frame = (o: Partial<LostFrame> = {}): LostFrame => ({
  region: 'ram',
  guestPhysAddr: 0x1_0000_3000n,
  size: 4096,
  offset: 0x3000,
  cause: 'recovered',
  wallTime: '2026-12-07T00:44:03.845Z',
  ...o,
});
const bytes = (line: string) => Buffer.from(line.slice(9, -1), 'utf8');
const raw = (json: string) => {
  const b = Buffer.from(json);
  return Buffer.from(`${crc32(b).toString(16).padStart(8, '0')} ${json}`);
};

describe('fast decoding of lost lines', () => {
  it('every frame the engine writes decodes to itself, by the fast path', () => {
    const frames = [
      frame(),
      frame({ cause: 'split-poison', region: 'a-b_c.1' }),
      frame({ cause: 'refused', size: 2 << 20, offset: 0, guestPhysAddr: 0n, reason: 'shared-mapping' }),
      frame({ reason: '' }),
      frame({ offset: 2 ** 40, guestPhysAddr: 2n ** 51n + 2n ** 40n }),
      frame({ wallTime: '' }),
    ];
    const fast = new FastLost();
    for (const f of frames) {
      const b = bytes(lostLine(f));
      expect(fast.decode(b, 0, b.length)).toEqual(f);
      const line = Buffer.from(lostLine(f).slice(0, -1));
      expect(decodeLine(line)).toEqual({ type: 'lost', frame: f });
    }
  });

  it('other forms go to JSON.parse, with the same result or the same refusal', () => {
    const fast = new FastLost();
    const cases: { json: string; want: LostFrame | RegExp }[] = [
      // Keys in another order, an escape, a non-ASCII region, an address above 2^52: JSON's answer.
      { json: '{"type":"lost","v":1,"region":"ram","guestPhysAddr":"0x3000","size":4096,"offset":12288,"cause":"recovered","wallTime":"t"}', want: frame({ guestPhysAddr: 0x3000n, wallTime: 't' }) },
      { json: '{"v":1,"type":"lost","region":"r\\u0061m","guestPhysAddr":"0x3000","size":4096,"offset":12288,"cause":"recovered","wallTime":"t"}', want: frame({ guestPhysAddr: 0x3000n, wallTime: 't' }) },
      { json: '{"v":1,"type":"lost","region":"mémoire","guestPhysAddr":"0x3000","size":4096,"offset":12288,"cause":"recovered","wallTime":"t"}', want: frame({ region: 'mémoire', guestPhysAddr: 0x3000n, wallTime: 't' }) },
      { json: '{"v":1,"type":"lost","region":"ram","guestPhysAddr":"0xfffffffffffff000","size":4096,"offset":12288,"cause":"recovered","wallTime":"t"}', want: frame({ guestPhysAddr: 0xfffffffffffff000n, wallTime: 't' }) },
      // Bad: the same problems as before.
      { json: '{"v":1,"type":"lost","region":"ram","guestPhysAddr":"0x3000","size":04096,"offset":12288,"cause":"recovered","wallTime":"t"}', want: /JSON does not parse/ },
      { json: '{"v":1,"type":"lost","region":"","guestPhysAddr":"0x3000","size":4096,"offset":12288,"cause":"recovered","wallTime":"t"}', want: /region must not be empty/ },
      { json: '{"v":1,"type":"lost","region":"ram","guestPhysAddr":"0x3000","size":0,"offset":12288,"cause":"recovered","wallTime":"t"}', want: /size must be an integer >= 1/ },
      { json: '{"v":1,"type":"lost","region":"ram","guestPhysAddr":"0x3000","size":4096,"offset":12288,"cause":"recoveredx","wallTime":"t"}', want: /cause must be one of/ },
      { json: '{"v":1,"type":"lost","region":"ram","guestPhysAddr":"0x3000","size":4096,"offset":12288,"cause":"recovered","wallTime":"t","x":1}', want: frame({ guestPhysAddr: 0x3000n, wallTime: 't' }) },
      { json: '{"v":1,"type":"lost","region":"ram","guestPhysAddr":"0x3000","size":4096,"offset":99999999999999999,"cause":"recovered","wallTime":"t"}', want: /offset must be an integer/ },
    ];
    for (const c of cases) {
      const b = Buffer.from(c.json);
      expect(fast.decode(b, 0, b.length)).toBeUndefined();
      const got = decodeLine(raw(c.json));
      if (c.want instanceof RegExp) expect(got).toMatch(c.want);
      else expect(got).toEqual({ type: 'lost', frame: c.want });
    }
  });
});
