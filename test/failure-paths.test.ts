// Failure paths of a recovery must leave the page as its report says: no page Pending with nobody
// to process it (a full report queue), no readable runs in a page reported lost whole, no lost
// subpage bits for a page that was not split. Those that exhaust process resources run in a child.
import { describe, expect, it } from 'vitest';
import { native, PageState } from '../src/native';
import { hugeFile, MiB, openEngine, runChild, SUB } from './helpers';

const BUS_MCEERR_AO = 5;
const QUEUE = 8192;
const t = native as unknown as { testRaise(addr: bigint, code: number, lsb: number, count: number): void };

describe('failure paths', () => {
  it('a page whose report found the queue full is recovered all the same', async () => {
    const engine = openEngine();
    const region = engine.mapRegion({ name: 'ram', path: hugeFile('queue-full'), size: 4 * MiB });
    region.write(2 * MiB, Buffer.from('healthy'));
    const recovered: number[] = [];
    engine.on('recovered', (e) => recovered.push(e.hugePageIndex));
    engine.pause();
    const overflowBefore = native.counters().overflow;
    // Page 0 becomes Pending, and its reports fill the queue while the engine holds it.
    t.testRaise(region.address + 64n, BUS_MCEERR_AO, 21, QUEUE);
    // Page 1: Normal -> Pending by this handler, but its report finds no room.
    engine.injectPoison(region, 2 * MiB + 7 * SUB, { mode: 'simulate', kind: 'AO' });
    expect(native.counters().overflow).toBeGreaterThan(overflowBefore);
    expect(native.pageStates(region.id)[1]).toBe(PageState.Pending);
    engine.resume();
    await engine.whenIdle({ timeoutMs: 20_000 });
    const deadline = Date.now() + 5000;
    while (native.pageStates(region.id)[1] === PageState.Pending && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    expect(native.pageStates(region.id)[1]).toBe(PageState.Split);
    expect(recovered.sort()).toEqual([0, 1]);
    expect(region.read(2 * MiB, 7).toString()).toBe('healthy');
    expect(engine.lostPages().map((l) => l.offset)).toContain(2 * MiB + 7 * SUB);
  });

  it('a subpage lost in a split page whose report found the queue full is recorded and reported all the same', async () => {
    const engine = openEngine();
    const region = engine.mapRegion({ name: 'ram', path: hugeFile('queue-full-split'), size: 4 * MiB });
    engine.injectPoison(region, 2 * MiB + 5 * SUB, { mode: 'simulate' });
    await engine.whenIdle({ timeoutMs: 10_000 });
    expect(native.pageStates(region.id)[1]).toBe(PageState.Split);
    const lost: number[] = [];
    engine.on('lost', (e) => lost.push(e.offset));
    engine.pause();
    t.testRaise(region.address + 64n, BUS_MCEERR_AO, 21, QUEUE); // page 0's reports fill the queue
    const overflowBefore = native.counters().overflow;
    engine.injectPoison(region, 2 * MiB + 9 * SUB, { mode: 'simulate' }); // a new loss in the split page
    expect(native.counters().overflow).toBeGreaterThan(overflowBefore);
    engine.resume();
    await engine.whenIdle({ timeoutMs: 20_000 });
    const deadline = Date.now() + 5000;
    while (!lost.includes(2 * MiB + 9 * SUB) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    expect(lost).toContain(2 * MiB + 9 * SUB);
    expect(engine.lostPages().map((l) => l.offset)).toEqual(expect.arrayContaining([2 * MiB + 5 * SUB, 2 * MiB + 9 * SUB]));
    expect(lost.filter((o) => o === 2 * MiB + 5 * SUB)).toEqual([]); // the one already reported is not again
  });

  it('a swap that fails half-way (vm.max_map_count) leaves the page lost whole: no readable run, no lost bits', () => {
    // Kernels without guard markers: each lost subpage costs two map entries when the healthy runs
    // are opened after the move. With the process's entries used up, that runs out part-way.
    const r = runChild(`
      const native = require('bindings')('hugetlb_ras');
      const fs = require('fs');
      const { RasEngine } = require('hugetlb-ras');
      native.useGuardMarkers(false);
      const e = RasEngine.open({ reserveBytes: 0, lostPageGuard: 'guard' });
      const H = 2 << 20, S = 4096;
      const out = [];
      const perms = (addr, len) => {
        const res = [];
        for (const l of fs.readFileSync('/proc/self/maps', 'utf8').split('\\n')) {
          const m = /^([0-9a-f]+)-([0-9a-f]+) (\\S+)/.exec(l);
          if (m && BigInt('0x' + m[1]) < addr + BigInt(len) && BigInt('0x' + m[2]) > addr) res.push(m[3]);
        }
        return res;
      };
      for (let spare = 0; spare <= 24; spare += 2) {
        const r = e.mapRegion({ name: 'ram' + spare, path: process.env.F + spare, size: 2 * H, guestPhysAddr: BigInt(spare) << 24n });
        r.write(H, Buffer.alloc(H, 1));
        const ev = [];
        e.on('refused', (x) => { if (x.region === r.name) ev.push(x); });
        e.on('recovered', (x) => { if (x.region === r.name) ev.push({ recovered: true }); });
        e.pause();
        for (let k = 0; k < 8; k++) e.injectPoison(r, H + (3 + 4 * k) * S, { mode: 'simulate' });
        const taken = native.testFillMapCount(spare);
        e.resume();
        const c0 = Date.now();
        while (native.pageStates(r.id)[1] !== 3 && native.pageStates(r.id)[1] !== 4 && Date.now() - c0 < 10000) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 1);
        native.testReleaseMapCount();
        out.push({ spare, taken, state: native.pageStates(r.id)[1], perms: perms(r.address + BigInt(H), H), r, ev });
      }
      (async () => {
        await e.whenIdle({ timeoutMs: 20000 });
        const st = e.stats();
        const res = out.map((o) => {
          const reg = st.regions.find((x) => x.name === o.r.name);
          return { spare: o.spare, taken: o.taken, state: o.state, perms: o.perms, lostSubpages: reg.lostSubpages,
                   events: o.ev.map((x) => x.recovered ? 'recovered' : x.reason + ':' + x.syscall) };
        });
        console.log('RESULT ' + JSON.stringify(res));
        e.close();
        for (let spare = 0; spare <= 24; spare += 2) fs.rmSync(process.env.F + spare, { force: true });
      })().catch((err) => { console.error(err); process.exit(3); });
    `, { F: hugeFile('maxmap') });
    const line = r.stdout.split('\n').find((l) => l.startsWith('RESULT '));
    expect(line, r.stderr).toBeDefined();
    const res = JSON.parse((line as string).slice(7)) as { spare: number; taken: number; state: number; perms: string[]; lostSubpages: number; events: string[] }[];
    expect(r.status).toBe(0);
    for (const o of res) {
      expect(o.taken, JSON.stringify(o)).toBeGreaterThan(0);
      if (o.state === PageState.Lost) {
        // Reported lost whole: so it is, every byte of it.
        expect(o.events, JSON.stringify(o)).toEqual([expect.stringMatching(/^no-memory:/)]);
        for (const p of o.perms) expect(p.slice(0, 3), JSON.stringify(o)).toBe('---');
        expect(o.lostSubpages, JSON.stringify(o)).toBe(0);
      } else {
        expect(o.state, JSON.stringify(o)).toBe(PageState.Split);
        expect(o.events).toEqual(['recovered']);
        expect(o.lostSubpages).toBe(8);
      }
    }
    // The failure after the move (opening the healthy runs) was reached, and so was a success.
    expect(res.some((o) => o.events[0] === 'no-memory:mprotect'), JSON.stringify(res)).toBe(true);
    expect(res.some((o) => o.state === PageState.Split)).toBe(true);
  });
});
