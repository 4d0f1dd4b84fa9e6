// Issue 20 #3: the process-wide counters stay true when a Worker's engine goes away with work in
// flight (reports queued, events posted to an environment being torn down): the next engine of the
// process is idle at once. In a child with a timeout (the old failure: whenIdle never resolves).
import { describe, expect, it } from 'vitest';
import { hugeFile, PKG, runChild } from './helpers';

describe('counters across Workers', () => {
  it('a Worker poisons and exits without waiting; the main thread\'s next engine is idle at once, and still counts its own work', () => {
    const r = runChild(`
      const { Worker } = require('worker_threads');
      const { RasEngine } = ${PKG};
      const w = new Worker(\`
        const { RasEngine } = require('hugetlb-ras');
        const e = RasEngine.open({ reserveBytes: 0 });
        const r = e.mapRegion({ name: 'w', path: '\${process.env.F1}', size: 8 << 20 });
        r.write(0, Buffer.alloc(8 << 20, 3));
        for (let p = 0; p < 4; p++) e.injectPoison(r, p * (2 << 20) + 4096 * (p + 1), { mode: 'simulate' });
        process.exit(0);   // no whenIdle, no close: the engine goes with the thread
      \`, { eval: true });
      w.on('exit', async () => {
        const e = RasEngine.open({ reserveBytes: 0 });
        const out = {};
        await e.whenIdle({ timeoutMs: 3000 }).then(() => { out.idle = true; }, (err) => { out.idle = err.code; });
        const region = e.mapRegion({ name: 'm', path: process.env.F2, size: 4 << 20 });
        region.write(0, Buffer.alloc(4 << 20, 5));
        e.injectPoison(region, (2 << 20) + 8192, { mode: 'simulate' });
        await e.whenIdle({ timeoutMs: 10000 }).then(() => { out.idle2 = true; }, (err) => { out.idle2 = err.code; });
        out.lost = e.lostPages().map((l) => l.offset);
        e.close();
        console.log(JSON.stringify(out));
      });
    `, { F1: hugeFile('worker-exit'), F2: hugeFile('main-after') });
    const line = r.stdout.trim().split("\n").filter((l) => l.startsWith('{')).pop();
    expect(line, `signal ${r.signal} status ${r.status} ${r.stderr.slice(-500)}`).toBeDefined();
    expect(JSON.parse(line!)).toEqual({ idle: true, idle2: true, lost: [(2 << 20) + 8192] });
  });
});
