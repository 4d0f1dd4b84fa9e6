import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { PoisonError } from '../src/index';
import { verifyPattern } from '../src/testing';
import { hugeFile, MiB, openEngine, PKG, runChild, SUB, TESTING } from './helpers';

describe('the ledger survives a restart of the VMM', () => {
  it('replays lost frames from the journal, re-protects them and reports them', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ras-journal-'));
    const journal = path.join(dir, 'ledger.journal');
    const file = hugeFile('restart');
    // First life: poison, recover, hand over (the split page's data into the file), then die without
    // closing anything.
    const first = runChild(`
      const { RasEngine } = ${PKG};
      const { fillPattern } = ${TESTING};
      const e = RasEngine.open({ reserveBytes: 0, journalPath: process.env.J });
      const r = e.mapRegion({ name: 'ram', path: process.env.F, size: 4 << 20, guestPhysAddr: 0x200000000n });
      fillPattern(r, 31);
      e.injectPoison(r, (2 << 20) + 17 * 4096, { mode: 'simulate' });
      e.whenIdle().then(() => e.prepareHandover()).then(() => { console.log(JSON.stringify(e.lostPages().map((p) => p.offset))); process.exit(0); });
    `, { J: journal, F: file });
    expect(first.stderr).toBe('');
    expect(JSON.parse(first.stdout)).toEqual([2 * MiB + 17 * SUB]);
    expect(fs.statSync(journal).mode & 0o777).toBe(0o600);

    // Second life: the same layout finds the loss again before anybody touches it.
    const engine = openEngine({ journalPath: journal });
    const lost: bigint[] = [];
    engine.on('lost', (e) => lost.push(e.guestPhysAddr));
    const region = engine.mapRegion({ name: 'ram', path: file, size: 4 * MiB, guestPhysAddr: 0x2_0000_0000n });
    const gpa = 0x2_0000_0000n + BigInt(2 * MiB + 17 * SUB);
    await engine.whenIdle({ timeoutMs: 10_000 });
    expect(lost).toEqual([gpa]);
    expect(engine.lostPages()).toEqual([expect.objectContaining({ guestPhysAddr: gpa, size: SUB, cause: 'replayed' })]);
    expect(() => region.read(2 * MiB + 17 * SUB, 1)).toThrow(PoisonError);
    expect(verifyPattern(region, 31)).toMatchObject({ wrongBytes: 0, unreadableOffsets: [2 * MiB + 17 * SUB] });
    engine.close();

    // A different layout under the same name is refused, and nothing stays mapped.
    const other = openEngine({ journalPath: journal });
    expect(() => other.mapRegion({ name: 'ram', path: file, size: 2 * MiB, guestPhysAddr: 0x2_0000_0000n })).toThrow(
      expect.objectContaining({ code: 'ERR_JOURNAL_LAYOUT_MISMATCH' }),
    );
    expect(fs.readFileSync('/proc/self/maps', 'utf8')).not.toContain(file);
    fs.rmSync(dir, { recursive: true, force: true });
  });
});
