// A reset record the journal could not take is retried like a lost frame: once the disk has room
// again, the journal clears the frames the reset gave back (else the next life finds the fresh huge
// page lost or stale).
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { readJournal } from '../src/index';
import { regionLine } from '../src/ledger/format';
import { hugeFile, MiB, openEngine, SUB, until } from './helpers';

const root = process.getuid?.() === 0;
let mnt: string | undefined;
afterAll(() => {
  if (mnt) {
    execFileSync('umount', [mnt]);
    fs.rmdirSync(mnt);
  }
});

describe.skipIf(!root)('a reset record on a full disk (tmpfs; root)', () => {
  it('is reported, counted as not durable, and written once there is room', async () => {
    mnt = fs.mkdtempSync(path.join(os.tmpdir(), 'ras-tinyfs-'));
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=64k,mode=0700', 'none', mnt]);
    const journal = path.join(mnt, 'j');
    const engine = openEngine({ journalPath: journal });
    const region = engine.mapRegion({ name: 'ram', path: hugeFile('reset-retry'), size: 4 * MiB });
    engine.injectPoison(region, 2 * MiB + 5 * SUB, { mode: 'simulate' });
    await engine.whenIdle({ timeoutMs: 10_000 });
    expect(readJournal(journal).lost).toHaveLength(1);
    const filler = path.join(mnt, 'filler');
    const fd = fs.openSync(filler, 'w');
    try {
      for (;;) fs.writeSync(fd, Buffer.alloc(4096, 1));
    } catch {
      /* ENOSPC */
    } finally {
      fs.closeSync(fd);
    }
    const free = (4096 - (fs.statSync(journal).size % 4096)) % 4096;
    if (free > 0) {
      const layout = [...readJournal(journal).regions.values()][0];
      fs.appendFileSync(journal, regionLine(layout, 'x'.repeat(free - regionLine(layout, '').length)));
    }
    const errors: (Error & { code?: string })[] = [];
    engine.on('error', (e) => errors.push(e));
    expect(await engine.resetRegion(region)).toMatchObject({ restoredHugePages: 1 });
    expect(errors).toEqual([expect.objectContaining({ code: 'ERR_JOURNAL_WRITE' })]);
    expect(engine.stats().journal!.notDurable).toBe(1);
    fs.rmSync(filler);
    await until(() => engine.stats().journal!.notDurable === 0, 5_000);
    expect(readJournal(journal).lost).toEqual([]);
    engine.close();
    fs.rmSync(journal);
  });
});
