// prepareHandover() needs every lost frame in the journal first: a handover whose lost frames did not
// reach the journal would give a successor a file page with zeros where the frames were, and no record
// that they are lost. It is refused (ERR_JOURNAL_WRITE) before anything is punched or copied.
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { readJournal } from '../src/index';
import { regionLine } from '../src/ledger/format';
import { hugeFile, MiB, openEngine, SUB } from './helpers';

const root = process.getuid?.() === 0;
let mnt: string | undefined;
afterAll(() => {
  if (mnt) {
    execFileSync('umount', [mnt]);
    fs.rmdirSync(mnt);
  }
});

describe.skipIf(!root)('prepareHandover with lost frames the journal does not hold (a full tmpfs; root)', () => {
  it('is refused before anything is punched or copied, and the engine is not handed over', async () => {
    mnt = fs.mkdtempSync(path.join(os.tmpdir(), 'ras-tinyfs-'));
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=64k,mode=0700', 'none', mnt]);
    const journal = path.join(mnt, 'j');
    const file = hugeFile('handover-durable');
    const engine = openEngine({ journalPath: journal });
    const region = engine.mapRegion({ name: 'ram', path: file, size: 4 * MiB });
    region.write(2 * MiB + 100, Buffer.from('before'));
    // Fill the file system, and the journal's last page with a padded valid record: no append fits.
    const fd = fs.openSync(path.join(mnt, 'filler'), 'w');
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
    engine.on('error', () => {});
    engine.injectPoison(region, 2 * MiB + 5 * SUB, { mode: 'simulate' });
    await engine.whenIdle({ timeoutMs: 10_000 });
    expect(engine.stats().journal!.notDurable).toBe(1);
    region.write(2 * MiB + 100, Buffer.from('after!'));
    await expect(engine.prepareHandover()).rejects.toMatchObject({ code: 'ERR_JOURNAL_WRITE' });
    expect(engine.stats().handoverId).toBeUndefined();
    // Nothing was copied into the file: it still holds the page as of the poison.
    const buf = Buffer.alloc(6);
    const ffd = fs.openSync(file, 'r');
    fs.readSync(ffd, buf, 0, 6, 2 * MiB + 100);
    fs.closeSync(ffd);
    expect(buf.toString()).toBe('before');
    fs.rmSync(path.join(mnt, 'filler'));
    engine.close();
    fs.rmSync(journal);
  });
});
