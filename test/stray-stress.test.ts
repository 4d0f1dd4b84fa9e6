// Issue 20, "done means": stray SIGBUS / SIGSEGV (tgkill at the JS thread doing guarded access and C
// API probes, kill at the process) while pages are poisoned, recovered and probed and Workers open
// and close engines of their own, many rounds, in a child with a timeout. Every stray reaches the
// VMM's own handlers (installed before the engine), none is taken for a fault; no hang, no crash,
// every loss recorded exactly once and none invented.
import { describe, expect, it } from 'vitest';
import { hugeFile, PKG, runChild } from './helpers';

const ROUNDS = 6;

describe('stray signals stress', () => {
  it('tgkill and kill storms over guarded reads and writes, C API probes, recoveries and Workers', () => {
    const files = Array.from({ length: 2 * ROUNDS }, (_, i) => hugeFile('stress-' + i));
    const r = runChild(`
      const { Worker } = require('worker_threads');
      const native = require('bindings')('hugetlb_ras');
      native.testInstallVmmCounters();            // the VMM's own handlers, before any engine
      const { RasEngine } = ${PKG};
      const MiB = 1 << 20, SUB = 4096, GPA = 0x100000000n;
      const files = ${JSON.stringify(files)};
      const bad = [];
      let sent = 0;
      const storm = (k) => native.testStrayStart(k % 2 ? 0 : process.pid, 300);
      const join = (k, phase) => { const s = native.testStrayJoin(); sent += s.sent; if (s.missed !== 0 || s.faults !== 0) bad.push({ k, phase, s }); };
      // A Worker opens an engine, poisons, recovers, reads, and exits.
      const worker = (file) => new Promise((resolve) => {
        const w = new Worker(\`
          const { RasEngine } = require('hugetlb-ras');
          const e = RasEngine.open({ reserveBytes: 0 });
          const r = e.mapRegion({ name: 'w', path: '\${file}', size: 4 << 20 });
          r.write(0, Buffer.alloc(4 << 20, 3));
          e.injectPoison(r, (2 << 20) + 4096, { mode: 'simulate' });
          e.whenIdle({ timeoutMs: 20000 }).then(() => {
            const ok = r.read(2 << 20, 4096).every((b) => b === 3) && e.lostPages().length === 1;
            e.close();
            require('worker_threads').parentPort.postMessage(ok);
          }, (err) => require('worker_threads').parentPort.postMessage(err.code));
        \`, { eval: true });
        w.on('message', (ok) => { if (ok !== true) bad.push('worker ' + ok); });
        w.on('error', (err) => bad.push('worker ' + err.message));
        w.on('exit', resolve);
      });
      (async () => {
        for (let k = 0; k < ${ROUNDS}; k++) {
          storm(k);
          await worker(files[2 * k + 1]);
          join(k, 'worker');
          const e = RasEngine.open({ reserveBytes: 0 });
          // Whatever the Worker's engine left behind, this one is idle at once.
          await e.whenIdle({ timeoutMs: 5000 }).catch((err) => bad.push({ k, idle: err.code }));
          const region = e.mapRegion({ name: 'ram', path: files[2 * k], size: 8 * MiB, guestPhysAddr: GPA });
          const data = Buffer.alloc(region.size);
          for (let i = 0; i < data.length; i += 512) data.writeUInt32LE((i ^ 0x5a5a5a5a ^ k) >>> 0, i);
          region.write(0, data);
          const api = e.nativeApi();
          const backlog = SUB, target = 2 * MiB;
          e.pause();
          native.testRaise(region.address + BigInt(backlog), 5, 12, 2000);
          e.injectPoison(region, target + 2 * SUB, { mode: 'simulate', signal: false });
          e.resume();
          storm(k);   // after the engine's own self-sent reports (a standard signal pending twice is one)
          const expected = [target + 2 * SUB];   // the backlog is reports only: its frame reads back, nothing is lost there
          if (k % 2) {
            const st = native.testCapiCheck(api, 'gpa', GPA + BigInt(target + 2 * SUB), 10000);
            if (st.rc !== 0 || st.state !== 3) bad.push({ k, capi: st.rc, state: st.state });
          }
          for (const off of [target, target + 5 * SUB, target + 300 * SUB]) {
            try {
              if (!region.read(off, SUB).equals(data.subarray(off, off + SUB))) bad.push({ k, off, wrong: true });
              region.write(off + 8, Buffer.from('dev'));
              data.write('dev', off + 8);
            } catch (err) { bad.push({ k, off, code: err.code, signal: err.signal, siCode: err.siCode }); }
          }
          const h = native.testCapiCheck(api, 'gpa', GPA + BigInt(4 * MiB + 7 * SUB), 0);
          if (h.rc !== 0 || h.state !== 1) bad.push({ k, healthy: h.rc, state: h.state });
          await e.whenIdle({ timeoutMs: 30000 }).catch((err) => bad.push({ k, idle2: err.code }));
          const lost = e.lostPages().map((l) => l.offset).sort((a, b) => a - b);
          if (JSON.stringify(lost) !== JSON.stringify(expected)) bad.push({ k, lost, expected });
          for (let off = 0; off < region.size; off += SUB) {
            if (expected.includes(off)) continue;
            if (!region.read(off, SUB).equals(data.subarray(off, off + SUB))) { bad.push({ k, off, wrongAfter: true }); break; }
          }
          e.close();
          join(k, 'engine');
        }
        const s = native.testStrayJoin();
        console.log(JSON.stringify({ bad, sent, seen: s.seenBus + s.seenSegv, faults: s.faults }));
        process.exit(0);
      })();
    `);
    const line = r.stdout.trim().split('\n').filter((l) => l.startsWith('{')).pop();
    expect(line, `signal ${r.signal} status ${r.status} ${r.stderr.slice(-600)}`).toBeDefined();
    const out = JSON.parse(line!);
    expect(out.bad).toEqual([]);
    expect(out.faults).toBe(0);
    expect(out.sent).toBe(2 * 300 * ROUNDS);
    expect(out.seen).toBe(out.sent);
    expect(r.status).toBe(0);
  });
});
