// package.json says engines node >= 20: the journal must work on a Node without zlib.crc32 (before
// 20.15 / 22.2). The journal's CRC is our own; its values are zlib's.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as zlib from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { crc32Js as crc32 } from '../src/ledger/crc32';
import { PKG, runChild } from './helpers';

describe('the journal on a Node without zlib.crc32', () => {
  it('opens, appends and replays a journal', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ras-crc-'));
    const r = runChild(
      `
      delete require('zlib').crc32; // as on Node 20.0 - 20.14
      const { Journal, readJournal } = ${PKG};
      const { journal } = Journal.open(process.env.J);
      journal.checkRegion({ name: 'ram', path: '/x', size: 4 << 20, offset: 0, guestPhysAddr: 0n, hugePageSize: 2 << 20 });
      journal.appendLost([{ region: 'ram', guestPhysAddr: 0x3000n, size: 4096, offset: 0x3000, cause: 'recovered', wallTime: '' }]);
      journal.close();
      const r = readJournal(process.env.J);
      console.log(r.lost.length, r.warnings.length);
    `,
      { J: path.join(dir, 'j') },
    );
    expect(r.stderr).toBe('');
    expect(r.stdout.trim()).toBe('1 0');
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it.skipIf(typeof (zlib as { crc32?: unknown }).crc32 !== 'function')('gives the values zlib.crc32 gives', () => {
    const z = (zlib as unknown as { crc32(b: Uint8Array): number }).crc32;
    for (const s of ['', 'a', '{"v":1,"type":"lost"}', 'x'.repeat(1000)]) expect(crc32(Buffer.from(s))).toBe(z(Buffer.from(s)));
    const rnd = Buffer.from(Array.from({ length: 4096 }, (_, i) => (i * 131 + 7) & 0xff));
    expect(crc32(rnd)).toBe(z(rnd));
  });
});
