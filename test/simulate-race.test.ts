// Simulated poison (the test tool every host test uses) against a recovery of the same huge page.
// simulate::Poison decided on a Normal page and then made the whole huge page PROT_NONE; a recovery
// that began in between got its replacement made inaccessible instead: healthy memory of a Split
// page that no poison explains. Under load a vCPU load thread then took a SIGSEGV that was chained
// to the default action (lazy.test's "Channel closed" worker crash, 5 in about 60 runs). Here the
// window is held open (testSimPoisonHold: Poison waits up to 3 s for the page to be split before
// its mprotect) and a report from another thread starts the recovery inside it; on the lazy path
// the back half is held, so what the front half put in place is what a reader meets. In a child:
// the old failure may kill the process.
import { describe, expect, it } from 'vitest';
import { native } from '../src/native';
import { hugeFile, PKG, runChild, SUB, TESTING } from './helpers';

const lazy = native.lazyInfo();

describe('simulated poison and a recovery of the same page', () => {
  it.each([
    ['lazy (the back half held)', "{ reserveBytes: 'auto', lostPageGuard: 'uffd' }", true],
    ['eager', "{ reserveBytes: 'auto', lazyRecovery: false }", false],
  ])('%s: a recovery that begins while a poison of the page is being put in: only the poisoned 4 KiB is unreadable, then and after', (_what, opts, needsLazy) => {
    if (needsLazy && !lazy.available) return;
    const r = runChild(`
      const { RasEngine } = ${PKG};
      const { fillPattern, verifyPattern } = ${TESTING};
      const { native } = require(process.cwd() + '/dist/src/native.js');
      const until = async (p, ms) => { const t = Date.now(); while (!p()) { if (Date.now() - t > ms) throw new Error('timeout'); await new Promise((r) => setTimeout(r, 5)); } };
      (async () => {
        const e = RasEngine.open(${opts});
        const region = e.mapRegion({ name: 'sr', path: process.env.F, size: 2 << 20 });
        fillPattern(region, 5);
        await until(() => e.stats().reserveBytes >= e.stats().reserveTarget, 20000);
        native.testHoldBackHalves(true);
        native.testSimPoisonHold(3e9);
        // Another thread's report for the page (AR at subpage 7), 100 ms from now: inside the window.
        native.testRaiseInThread(region.address + 7n * 4096n, 4, 12, 100);
        e.injectPoison(region, 300 * 4096, { mode: 'simulate', signal: false });
        native.testSimPoisonHold(0);
        await until(() => native.pageStates(region.id)[0] === 3, 20000);
        const during = verifyPattern(region, 5).unreadableOffsets;
        native.testHoldBackHalves(false);
        await e.whenIdle({ timeoutMs: 20000 });
        native.testJoinRaisers();
        const after = verifyPattern(region, 5);
        console.log('RESULT ' + JSON.stringify({ during, after: after.unreadableOffsets, wrong: after.wrongBytes, lost: e.lostPages().map((l) => l.offset) }));
        e.close();
      })().catch((err) => { console.log('ERROR ' + err.message); process.exit(3); });
    `, { F: hugeFile(needsLazy ? 'simrace-lazy' : 'simrace-eager') });
    const line = r.stdout.split('\n').find((l) => l.startsWith('RESULT '));
    expect(r.signal, r.stderr.slice(-600)).toBeNull();
    expect(line, r.stdout.slice(-600) + r.stderr.slice(-600)).toBeDefined();
    const res = JSON.parse(line!.slice(7));
    expect(res.during).toEqual([300 * SUB]);
    expect(res.after).toEqual([300 * SUB]);
    expect(res.wrong).toBe(0);
    expect(res.lost).toEqual([300 * SUB]);
    expect(r.status).toBe(0);
  });
});
