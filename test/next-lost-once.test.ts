// Issue 20 #5: next_lost() lists each lost frame once. Threads whose handlers meet one new lost
// subpage at the same instant both used to record it (the handler ignored whether its mark was the
// first), and the VMM would inject two machine checks. In a child: the threads' handlers chain the
// loss to the VMM's handler (installed before the engine), which counts and returns.
import { describe, expect, it } from 'vitest';
import { hugeFile, PKG, runChild } from './helpers';

describe('next_lost lists a frame once', () => {
  it('four threads reporting one new subpage loss at the same instant: one entry per frame', () => {
    const r = runChild(`
      const native = require('bindings')('hugetlb_ras');
      native.testInstallPrevSigbus('mask');
      const { RasEngine } = ${PKG};
      const SUB = 4096, H = 2 << 20;
      const e = RasEngine.open({ reserveBytes: 0 });
      const region = e.mapRegion({ name: 'a', path: process.env.F, size: 4 << 20 });
      region.write(0, Buffer.alloc(4 << 20, 1));
      (async () => {
        e.injectPoison(region, H + 3 * SUB, { mode: 'simulate' });
        await e.whenIdle({ timeoutMs: 10000 });          // the page is split, subpage 3 lost
        const subs = [];
        for (let s = 10; s < 70; s++) {
          e.injectPoison(region, H + s * SUB, { mode: 'simulate', signal: false });
          native.testHoldUntil(60);                      // both handlers go on from the same instant
          for (let t = 0; t < 4; t++) native.testRaiseInThread(region.address + BigInt(H + s * SUB), 4, 12);
          native.testJoinRaisers();
          native.testHoldUntil(0);
          subs.push(H + s * SUB);
        }
        await e.whenIdle({ timeoutMs: 10000 });
        const n = native.testCapiNextLost(e.nativeApi(), 0n);
        const count = {};
        for (const l of n.lost) { const off = Number(l.hva - region.address); count[off] = (count[off] || 0) + 1; }
        const twice = Object.entries(count).filter(([, c]) => c !== 1).map(([o]) => Number(o));
        const missing = subs.filter((o) => !count[o]);
        const ledger = e.lostPages().map((l) => l.offset).sort((a, b) => a - b);
        console.log(JSON.stringify({ twice, missing, entries: n.lost.length, ledger: ledger.length }));
        e.close();
      })();
    `, { F: hugeFile('next-lost-once') });
    const line = r.stdout.trim().split('\n').filter((l) => l.startsWith('{')).pop();
    expect(line, `signal ${r.signal} status ${r.status} ${r.stderr.slice(-500)}`).toBeDefined();
    expect(JSON.parse(line!)).toEqual({ twice: [], missing: [], entries: 61, ledger: 61 });
  });
});

describe('next_lost after a guest reset', () => {
  it('a frame lost, given back by a reset and lost again is listed again (once per loss), and journaled again', async () => {
    const { openEngine, hugeFile: file, SUB, MiB } = await import('./helpers');
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const native = require('bindings')('hugetlb_ras');
    const engine = openEngine();
    const region = engine.mapRegion({ name: 'ram', path: file('reset-again'), size: 4 * MiB });
    region.write(0, Buffer.alloc(4 * MiB, 2));
    const api = engine.nativeApi();
    const first = native.testCapiNextLost(api, 0n);
    const off = 2 * MiB + 9 * SUB;
    engine.injectPoison(region, off, { mode: 'simulate' });
    await engine.whenIdle({ timeoutMs: 10_000 });
    const a = native.testCapiNextLost(api, first.cursor);
    expect(a.lost.map((l: { hva: bigint }) => Number(l.hva - region.address))).toEqual([off]);
    expect(await engine.resetRegion(region)).toMatchObject({ restoredHugePages: 1 });
    engine.injectPoison(region, off, { mode: 'simulate' });
    await engine.whenIdle({ timeoutMs: 10_000 });
    const b = native.testCapiNextLost(api, a.cursor);
    expect(b.lost.map((l: { hva: bigint }) => Number(l.hva - region.address))).toEqual([off]);
    expect(engine.lostPages().map((l) => l.offset)).toEqual([off]);
  });
});
