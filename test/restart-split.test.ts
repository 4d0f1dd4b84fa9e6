// The rule: every huge page whose current data lives only in this process's memory is known to the
// journal, and is stale for a successor unless it was handed over completely. Three ways a page got
// there without a lost frame: a reset that fell back to anonymous memory (empty pool), a split with no
// lost frame (an action-optional report whose page read back whole), and a handover that failed half
// way through the copy. The next life must never serve the file's data of such a page as current.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { hugeFile, MiB, openEngine, PKG, runChild, TESTING } from './helpers';

const GPA = 0x1_0000_0000n;
const NATIVE = "require(process.cwd() + '/dist/src/native.js').native";

function firstLife(journal: string, file: string, body: string): void {
  const r = runChild(
    `
      const { RasEngine } = ${PKG};
      const { fillPattern } = ${TESTING};
      const native = ${NATIVE};
      const e = RasEngine.open({ reserveBytes: 0, journalPath: process.env.J });
      const r = e.mapRegion({ name: 'ram', path: process.env.F, size: 4 << 20, guestPhysAddr: ${GPA}n });
      fillPattern(r, 5);
      (async () => { ${body} })().then(() => { console.log('done'); process.exit(0); }, (err) => { console.error(err); process.exit(1); });
    `,
    { J: journal, F: file },
  );
  expect(r.stderr).toBe('');
  expect(r.stdout.trim().split('\n').pop()).toBe('done');
}

async function secondLifeFindsStale(journal: string, file: string): Promise<void> {
  const engine = openEngine({ journalPath: journal });
  const region = engine.mapRegion({ name: 'ram', path: file, size: 4 * MiB, guestPhysAddr: GPA });
  await engine.whenIdle({ timeoutMs: 10_000 });
  expect(engine.lostPages()).toEqual([expect.objectContaining({ offset: 2 * MiB, size: 2 * MiB, cause: 'stale' })]);
  expect(() => region.read(2 * MiB + 100, 1)).toThrow(expect.objectContaining({ code: 'ERR_POISONED' }));
  expect(region.read(100, 4).length).toBe(4); // page 0 was never split: served from the file
}

describe('restart after a page lived only in private memory', () => {
  let dir: string;
  const journalIn = () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ras-split-'));
    return path.join(dir, 'j');
  };

  it('a split with no lost frame (action-optional report, page read back whole) is stale for the successor', async () => {
    const journal = journalIn();
    const file = hugeFile('split-nolost');
    firstLife(journal, file, `
      native.testRaise(r.address + (2n << 20n) + 64n, 5 /* BUS_MCEERR_AO */, 21, 1);
      await e.whenIdle({ timeoutMs: 10000 });
      if (e.lostPages().length !== 0) throw new Error('expected no lost frame');
      r.write((2 << 20) + 100, Buffer.from('written after the split'));
    `);
    await secondLifeFindsStale(journal, file);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('a reset that fell back to anonymous memory (empty pool) is stale for the successor', async () => {
    const journal = journalIn();
    const file = hugeFile('split-reset');
    firstLife(journal, file, `
      e.injectPoison(r, (2 << 20) + 4096, { mode: 'simulate' });
      await e.whenIdle({ timeoutMs: 10000 });
      native.testResetPoolEmpty(true);
      const ev = await e.resetRegion(r);
      if (ev.stillSplit !== 1) throw new Error('expected the anonymous fallback: ' + JSON.stringify(ev));
      r.write((2 << 20) + 100, Buffer.from('written after the reset'));
    `);
    await secondLifeFindsStale(journal, file);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('a handover that failed half way through its copy is stale for the successor', async () => {
    const journal = journalIn();
    const file = hugeFile('split-handover');
    firstLife(journal, file, `
      native.testRaise(r.address + (2n << 20n) + 64n, 5, 21, 1);
      await e.whenIdle({ timeoutMs: 10000 });
      native.testHandoverFailAfter(1 << 20);
      const h = await e.prepareHandover();
      if (h.notHandedOver.length !== 1 || !h.notHandedOver[0].punched) throw new Error('expected a half-done handover: ' + JSON.stringify(h));
    `);
    await secondLifeFindsStale(journal, file);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('a complete handover of a split page with no lost frame is current for the successor', async () => {
    const journal = journalIn();
    const file = hugeFile('split-handed');
    firstLife(journal, file, `
      native.testRaise(r.address + (2n << 20n) + 64n, 5, 21, 1);
      await e.whenIdle({ timeoutMs: 10000 });
      r.write((2 << 20) + 100, Buffer.from('kept'));
      const h = await e.prepareHandover();
      if (h.handedOver.length !== 1) throw new Error('expected a handover: ' + JSON.stringify(h));
    `);
    const engine = openEngine({ journalPath: journal });
    const region = engine.mapRegion({ name: 'ram', path: file, size: 4 * MiB, guestPhysAddr: GPA });
    await engine.whenIdle({ timeoutMs: 10_000 });
    expect(engine.lostPages()).toEqual([]);
    expect(region.read(2 * MiB + 100, 4).toString()).toBe('kept');
    fs.rmSync(dir, { recursive: true, force: true });
  });
});
