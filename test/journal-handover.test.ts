// The journal's handover records (format version 2): which huge pages' data in the file a restart
// may take as current, and how a version-1 journal, a torn or aborted handover, a later loss and a
// record with the wrong version are read.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { crc32 } from 'zlib';
import { describe, expect, it } from 'vitest';
import { readJournal } from '../src/ledger/file';

const MiB = 1 << 20;

function line(obj: Record<string, unknown>): string {
  const json = JSON.stringify(obj);
  return `${crc32(Buffer.from(json)).toString(16).padStart(8, '0')} ${json}\n`;
}

const region = line({ v: 1, type: 'region', name: 'ram', path: '/x', size: 4 * MiB, offset: 0, guestPhysAddr: '0x0', hugePageSize: 2 * MiB, wallTime: '' });
const lost = (off: number): string => line({ v: 1, type: 'lost', region: 'ram', guestPhysAddr: '0x' + off.toString(16), size: 4096, offset: off, cause: 'recovered', wallTime: '' });
const page = (id: string, v = 2): string =>
  line({ v, type: 'handover', id, region: 'ram', guestPhysAddr: '0x200000', offset: 2 * MiB, size: 2 * MiB, lost: 1, wallTime: '' });
const done = (id: string, pages = 1): string => line({ v: 2, type: 'handover-done', id, pages, wallTime: '' });

function replayOf(text: string): ReturnType<typeof readJournal> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ras-jh-'));
  const file = path.join(dir, 'j');
  fs.writeFileSync(file, text, { mode: 0o600 });
  try {
    return readJournal(file);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

describe('handover records', () => {
  it('a version-1 journal (no handover) still reads, with nothing handed over', () => {
    const r = replayOf(region + lost(2 * MiB + 4096));
    expect(r.warnings).toEqual([]);
    expect(r.lost).toHaveLength(1);
    expect(r.handedOver).toEqual([]);
  });

  it('a completed handover is trusted; torn, miscounted, aborted or followed by a loss it is not', () => {
    const base = region + lost(2 * MiB + 4096);
    expect(replayOf(base + page('a') + done('a')).handedOver).toEqual([
      { id: 'a', region: 'ram', guestPhysAddr: 2n * BigInt(MiB), offset: 2 * MiB, size: 2 * MiB, lost: 1, wallTime: '' },
    ]);
    expect(replayOf(base + page('a')).handedOver).toEqual([]); // no handover-done: torn
    expect(replayOf(base + page('a') + done('a', 2)).handedOver).toEqual([]);
    expect(replayOf(base + page('a') + done('a') + line({ v: 2, type: 'handover-abort', id: 'a', wallTime: '' })).handedOver).toEqual([]);
    expect(replayOf(base + page('a') + done('a') + lost(2 * MiB + 8192)).handedOver).toEqual([]);
    expect(replayOf(base + page('a') + done('a') + lost(4096)).handedOver).toHaveLength(1); // another huge page
    const resplit = line({ v: 2, type: 'resplit', region: 'ram', guestPhysAddr: '0x200000', offset: 2 * MiB, size: 2 * MiB, wallTime: '' });
    expect(replayOf(base + page('a') + done('a') + resplit).handedOver).toEqual([]);
    expect(replayOf(base + page('a') + done('a') + resplit + page('b') + done('b')).handedOver).toEqual([expect.objectContaining({ id: 'b' })]);
    const reset = line({ v: 1, type: 'reset', region: 'ram', guestPhysAddr: '0x0', size: 4 * MiB, wallTime: '' });
    expect(replayOf(base + page('a') + done('a') + reset).handedOver).toEqual([]);
  });

  it('a handover record must be version 2; a newer version is refused, a bad one skipped', () => {
    const r = replayOf(region + page('a', 1) + done('a'));
    expect(r.handedOver).toEqual([]);
    expect(r.warnings).toEqual([expect.objectContaining({ code: 'ERR_JOURNAL_BAD_RECORD', message: expect.stringMatching(/must have version 2/) })]);
    expect(() => replayOf(region + page('a', 5))).toThrow(expect.objectContaining({ code: 'ERR_JOURNAL_VERSION' }));
    const bad = line({ v: 2, type: 'handover', id: '', region: 'ram', guestPhysAddr: '0x200000', offset: 2 * MiB, size: 2 * MiB, lost: 1, wallTime: '' });
    expect(replayOf(region + bad).warnings).toEqual([expect.objectContaining({ code: 'ERR_JOURNAL_BAD_RECORD' })]);
  });
});
