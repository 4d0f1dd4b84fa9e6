// A region's removal and the reuse of its slot race with threads inside the signal handlers, the
// lanes and the C API. Each registration has an immutable descriptor that removal frees only when
// no thread holds it (native/state/region.h). In children: a wrong answer writes outside arrays.
import { describe, expect, it } from 'vitest';
import { hugeFile, runChild } from './helpers';

const AO = 5;

describe('region removal and slot reuse', () => {
  it('a handler preempted after its lookup keeps its own region: unmap waits, the next region of the slot is untouched', () => {
    const r = runChild(`
      const native = require('bindings')('hugetlb_ras');
      const { RasEngine } = require('hugetlb-ras');
      const H = 2 << 20;
      const sleep = (ms) => Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
      (async () => {
        const e = RasEngine.open({ reserveBytes: 0 });
        const ev = [];
        for (const k of ['poison', 'recovered', 'refused']) e.on(k, (x) => ev.push(k + ':' + x.region));
        const a = e.mapRegion({ name: 'a', path: process.env.FA, size: 4 * H });
        native.testHoldDelay(300e6);  // the handler stops right after finding region a
        native.testRaiseInThread(a.address + BigInt(3 * H + 0x5000), ${AO}, 21);
        sleep(50);
        const t0 = Date.now();
        e.unmapRegion(a);
        const waited = Date.now() - t0;
        // Same slot, same size, most likely the same addresses: what a stale handler would hit.
        const b = e.mapRegion({ name: 'b', path: process.env.FB, size: 4 * H, guestPhysAddr: 1n << 32n });
        native.testJoinRaisers();
        native.testHoldDelay(0);
        await e.whenIdle({ timeoutMs: 10000 });
        await new Promise((r) => setTimeout(r, 100));
        console.log('RESULT ' + JSON.stringify({ waited, sameAddress: a.address === b.address, b: Array.from(native.pageStates(b.id)), ev }));
        e.close();
      })().catch((err) => { console.error(err); process.exit(3); });
    `, { FA: hugeFile('reuse-a'), FB: hugeFile('reuse-b') }); // both removed after the test (their reservations with them)
    const line = r.stdout.split('\n').find((l) => l.startsWith('RESULT '));
    expect(line, `status ${r.status} signal ${r.signal} ${r.stderr}`).toBeDefined();
    const o = JSON.parse((line as string).slice(7)) as { waited: number; b: number[]; ev: string[] };
    expect(r.status).toBe(0);
    expect(o.waited).toBeGreaterThan(100); // removal waited for the thread inside the handler
    expect(o.b).toEqual([0, 0, 0, 0]); // nothing of a's report reached b
    expect(o.ev.filter((x) => x.endsWith(':b'))).toEqual([]);
  });

  it('close() while threads wait in the handlers on a paused engine: they are released before anything is freed', () => {
    const r = runChild(`
      const native = require('bindings')('hugetlb_ras');
      const { RasEngine } = require('hugetlb-ras');
      const H = 2 << 20;
      const sleep = (ms) => Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
      const e = RasEngine.open({ reserveBytes: 0 });
      const a = e.mapRegion({ name: 'a', path: process.env.F, size: 4 * H });
      e.pause();
      // Threads the engine has no slot for wait for a paused engine (BUS_MCEERR_AR, as a VMM thread).
      for (let i = 0; i < 4; i++) native.testRaiseInThread(a.address + BigInt(i * H + 0x1000), 4, 21);
      sleep(100);
      const t0 = Date.now();
      e.close();
      native.testJoinRaisers();
      console.log('RESULT ' + JSON.stringify({ closeMs: Date.now() - t0 }));
    `, { F: hugeFile('close-waiters') });
    expect(r.stdout, r.stderr).toContain('RESULT ');
    expect(r.status).toBe(0);
  });
});
