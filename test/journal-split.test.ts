// The journal's `split` record (format version 3): a huge page in private memory with no lost frame
// to say so is stale for a successor until a complete handover or a reset covers it.
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
const split = (v = 3): string => line({ v, type: 'split', region: 'ram', guestPhysAddr: '0x200000', offset: 2 * MiB, size: 2 * MiB, wallTime: '' });
const handover = (id: string): string =>
  line({ v: 2, type: 'handover', id, region: 'ram', guestPhysAddr: '0x200000', offset: 2 * MiB, size: 2 * MiB, lost: 0, wallTime: '' }) +
  line({ v: 2, type: 'handover-done', id, pages: 1, wallTime: '' });
const abort = (id: string): string => line({ v: 2, type: 'handover-abort', id, wallTime: '' });
const reset = line({ v: 1, type: 'reset', region: 'ram', guestPhysAddr: '0x200000', size: 2 * MiB, wallTime: '' });

function replayOf(text: string): ReturnType<typeof readJournal> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ras-js-'));
  const file = path.join(dir, 'j');
  fs.writeFileSync(file, text, { mode: 0o600 });
  try {
    return readJournal(file);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

describe('split records', () => {
  it('a split page is stale until a complete handover; an abort makes it stale again; a reset clears it', () => {
    expect(replayOf(region + split()).split).toEqual([expect.objectContaining({ region: 'ram', offset: 2 * MiB, size: 2 * MiB })]);
    expect(replayOf(region + split() + handover('a')).split).toEqual([]);
    expect(replayOf(region + split() + handover('a') + abort('a')).split).toHaveLength(1);
    expect(replayOf(region + split() + reset).split).toEqual([]);
    // A split after a handover voids it.
    const r = replayOf(region + handover('a') + split());
    expect(r.handedOver).toEqual([]);
    expect(r.split).toHaveLength(1);
  });

  it('a split record must be version 3; a version-2 journal reads with nothing split', () => {
    expect(replayOf(region + split(2)).warnings).toEqual([expect.objectContaining({ code: 'ERR_JOURNAL_BAD_RECORD', message: expect.stringMatching(/must have version 3/) })]);
    expect(replayOf(region + handover('a')).split).toEqual([]);
  });
});
