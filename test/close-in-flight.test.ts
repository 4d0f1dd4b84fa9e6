// close() right after a poison, while its recovery is in flight (eager or lazy, queued or held in
// the back half): every loss reaches the journal before close() returns, so the next life knows it.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { native } from '../src/native';
import { hugeFile, MiB, openEngine, PKG, runChild, SUB, TESTING } from './helpers';

const GPA = 0x1_0000_0000n;

function firstLife(journal: string, file: string, setup: string): { stdout: string; stderr: string; status: number | null } {
  return runChild(
    `
      const { RasEngine } = ${PKG};
      const t = ${TESTING};
      const e = RasEngine.open({ reserveBytes: 0, journalPath: process.env.J, ${setup.includes('EAGER') ? 'lazyRecovery: false' : 'lazyRecovery: true'} });
      const r = e.mapRegion({ name: 'ram', path: process.env.F, size: 4 << 20, guestPhysAddr: ${GPA}n });
      t.fillPattern(r, 7);
      ${setup.replace('EAGER', '')}
      e.injectPoison(r, (2 << 20) + 5 * 4096, { mode: 'simulate' });
      e.close();
      console.log('closed');
    `,
    { J: journal, F: file },
  );
}

describe('close() while a recovery is in flight', () => {
  const cases: [string, string][] = [
    ['eager, report not yet handled', 'EAGER'],
    ['lazy, report not yet handled', ''],
    ['lazy, back half held', "require(process.cwd() + '/dist/src/native.js').native.testHoldBackHalves(true);"],
    ['paused engine, report waiting', 'EAGER e.pause();'],
  ];
  for (const [name, setup] of cases) {
    it(`${name}: the next life knows the lost frame`, async () => {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ras-close-'));
      const journal = path.join(dir, 'j');
      const file = hugeFile('close-in-flight');
      for (let run = 0; run < 3; run++) {
        fs.rmSync(journal, { force: true });
        fs.rmSync(file, { force: true });
        const first = firstLife(journal, file, setup);
        expect(first.stderr).toBe('');
        expect(first.stdout.trim()).toBe('closed');
        const engine = openEngine({ journalPath: journal });
        const region = engine.mapRegion({ name: 'ram', path: file, size: 4 * MiB, guestPhysAddr: GPA });
        await engine.whenIdle({ timeoutMs: 10_000 });
        // The recovery finished inside close(): the frame is lost, 4 KiB of it, and never readable.
        const off = 2 * MiB + 5 * SUB;
        expect(engine.journalReplay!.lost).toEqual([expect.objectContaining({ offset: off, size: SUB, cause: 'recovered' })]);
        // Split and not handed over: the whole huge page is stale for this life, never served as current.
        expect(engine.lostPages()).toEqual([expect.objectContaining({ offset: 2 * MiB, size: 2 * MiB, cause: 'stale' })]);
        expect(() => region.read(off, 1)).toThrow(expect.objectContaining({ code: 'ERR_POISONED' }));
        engine.close();
      }
      fs.rmSync(dir, { recursive: true, force: true });
    });
  }
});

describe('unmapRegion() while a recovery on it is in flight', () => {
  it('the loss reaches the journal before unmapRegion returns', async () => {
    const { readJournal } = await import('../src/index');
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ras-unmap-'));
    const journal = path.join(dir, 'j');
    const engine = openEngine({ journalPath: journal });
    const region = engine.mapRegion({ name: 'ram', path: hugeFile('unmap-in-flight'), size: 4 * MiB, guestPhysAddr: GPA });
    engine.pause();
    engine.injectPoison(region, 2 * MiB + 5 * SUB, { mode: 'simulate' });
    engine.unmapRegion(region);
    expect(readJournal(journal).lost).toEqual([expect.objectContaining({ offset: 2 * MiB + 5 * SUB, size: SUB })]);
    expect(native.counters().paused).toBe(true); // still paused: the drain resumed it only for itself
    fs.rmSync(dir, { recursive: true, force: true });
  });
});
