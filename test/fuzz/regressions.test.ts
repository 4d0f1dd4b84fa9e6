// What the fuzzing found, each a minimal reproduction (those that crashed run in a child process),
// and files that change under a live region.
import * as fs from 'node:fs';
import * as os from 'node:os';
import { describe, expect, it } from 'vitest';
import { RasEngine, Region } from '../../src/index';
import { fillPattern, verifyPattern } from '../../src/testing';
import { hugeFile, MiB, openEngine, PKG, runChild, runLimited, SUB, TESTING } from '../helpers';
import { expectCanaries, fixture, hugeMaps } from './harness';


describe('fuzz: files that change under a live region, double close', () => {
  it('a file truncated under a live region: guarded access throws ERR_MEMORY_FAULT, no crash, nothing else changes', async () => {
    const fx = fixture();
    const p = hugeFile('trunc');
    const region = fx.engine.mapRegion({ name: 'trunc', path: p, size: 4 * MiB, guestPhysAddr: 1n << 32n });
    fillPattern(region, 41);
    fs.truncateSync(p, 2 * MiB);
    expect(region.read(0, 64).length).toBe(64); // the part still in the file
    for (const f of [() => region.read(2 * MiB, 8), () => region.read(2 * MiB - 4, 8), () => region.write(3 * MiB, Buffer.alloc(16)), () => fillPattern(region, 41)]) {
      expect(f).toThrow(expect.objectContaining({ code: 'ERR_MEMORY_FAULT', region: 'trunc' }));
    }
    const v = verifyPattern(region, 41);
    expect(v.wrongBytes).toBe(0);
    expect(v.unreadableOffsets[0]).toBe(2 * MiB);
    expect(fx.engine.lostPages()).toEqual([]);
    // A poison in the part that is gone: nothing to read back, the huge page is refused; no crash.
    fx.engine.injectPoison(region, 2 * MiB + 0x1000, { mode: 'simulate' });
    await fx.engine.whenIdle();
    expect(fx.engine.lostPages().map((l) => [l.region, l.offset, l.size, l.reason])).toEqual([['trunc', 2 * MiB, 2 * MiB, 'read-back-failed']]);
    expect(() => region.read(2 * MiB, 8)).toThrow(expect.objectContaining({ code: 'ERR_POISONED' }));
    expectCanaries(fx, 'truncated file');
  });

  it('the backing file deleted under a live region: read/write keep working, poison recovers, reset works', async () => {
    const fx = fixture();
    const p = hugeFile('deleted');
    const region = fx.engine.mapRegion({ name: 'deleted', path: p, size: 4 * MiB, guestPhysAddr: 1n << 32n });
    fillPattern(region, 42);
    const page0 = region.read(0, 2 * MiB);
    fs.rmSync(p);
    expect(fs.existsSync(p)).toBe(false);
    const before = region.read(0x1000, 64);
    region.write(0x1000, Buffer.alloc(64, 0xab));
    expect(region.read(0x1000, 64).equals(Buffer.alloc(64, 0xab))).toBe(true);
    region.write(0x1000, before);
    expect(verifyPattern(region, 42).wrongBytes).toBe(0);
    const recovered: unknown[] = [];
    fx.engine.on('recovered', (e) => recovered.push(e));
    fx.engine.injectPoison(region, 2 * MiB + 0x2345, { mode: 'simulate' });
    await fx.engine.whenIdle();
    expect(recovered).toHaveLength(1);
    expect(fx.engine.lostPages().map((l) => [l.offset, l.size])).toEqual([[2 * MiB + 0x2000, SUB]]);
    const v = verifyPattern(region, 42);
    expect(v.wrongBytes).toBe(0);
    expect(v.unreadableOffsets).toEqual([2 * MiB + 0x2000]);
    expect(() => region.read(2 * MiB + 0x2000, 1)).toThrow(expect.objectContaining({ code: 'ERR_POISONED' }));
    region.write(2 * MiB, Buffer.alloc(16, 1)); // the healthy rest of the split page is writable
    const ev = await fx.engine.resetRegion(region);
    expect(ev).toMatchObject({ restoredHugePages: 1, stillSplit: 0 });
    expect(fx.engine.lostPages()).toEqual([]);
    expect(region.read(2 * MiB + 0x2000, 8).length).toBe(8);
    region.write(2 * MiB + 0x2000, Buffer.alloc(8, 7));
    expect(region.read(2 * MiB + 0x2000, 8).equals(Buffer.alloc(8, 7))).toBe(true);
    expect(region.read(0, 2 * MiB).equals(page0)).toBe(true); // the huge page without poison kept its data
    expectCanaries(fx, 'deleted file');
  });

  it('double close: idempotent, unmaps everything once, leaves another engine working', async () => {
    const mapsBefore = hugeMaps();
    const a = RasEngine.open({ reserveBytes: 0 });
    const b = openEngine();
    const ra = a.mapRegion({ name: 'a', path: hugeFile('dc-a'), size: 2 * MiB });
    const rb = b.mapRegion({ name: 'b', path: hugeFile('dc-b'), size: 2 * MiB });
    fillPattern(rb, 51);
    expect(hugeMaps()).toBe(mapsBefore + 2);
    expect(a.close()).toBeUndefined();
    expect(a.close()).toBeUndefined();
    expect(a.isClosed).toBe(true);
    expect(hugeMaps()).toBe(mapsBefore + 1);
    expect(() => ra.read(0, 1)).toThrow(expect.objectContaining({ code: 'ERR_REGION_CLOSED' }));
    expect(() => a.stats()).toThrow(expect.objectContaining({ code: 'ERR_ENGINE_CLOSED' }));
    // The second close must not have taken the shared native worker or handlers away from b.
    b.injectPoison(rb, 0x3000, { mode: 'simulate' });
    await b.whenIdle({ timeoutMs: 10_000 });
    expect(b.lostPages().map((l) => l.offset)).toEqual([0x3000]);
    expect(verifyPattern(rb, 51).wrongBytes).toBe(0);
    b.close();
    b.close();
    expect(hugeMaps()).toBe(mapsBefore);
    // And a new engine opens and works after all of that.
    const c = openEngine();
    const rc = c.mapRegion({ name: 'c', path: hugeFile('dc-c'), size: 2 * MiB });
    c.injectPoison(rc, 0, { mode: 'simulate' });
    await c.whenIdle({ timeoutMs: 10_000 });
    expect(c.lostPages()).toHaveLength(1);
  });
});

// --- engine bugs found by the fuzzing: each a minimal reproduction ---------------------------------------

// Found by this file against ca1b10e (fixed in f12f17b): kept as regression tests.
describe('fuzz findings (those that crashed run in a child process)', () => {
  it('a hard link to a mapped file is the same file: mapping its range again is ERR_REGION_OVERLAP', async () => {
    const engine = openEngine();
    const p = hugeFile('hl');
    const q = hugeFile('hl-link');
    const a = engine.mapRegion({ name: 'a', path: p, size: 2 * MiB });
    fs.linkSync(p, q);
    let b: Region | undefined;
    try {
      b = engine.mapRegion({ name: 'b', path: q, size: 2 * MiB, guestPhysAddr: 1n << 32n });
    } catch (e) {
      expect(e).toMatchObject({ code: 'ERR_REGION_OVERLAP' });
      return;
    }
    // Accepted: then the two mappings must never diverge. Today a recovery of `a` (a private copy)
    // makes them diverge silently, exactly what share=on regions are refused for.
    a.write(0, Buffer.from('hello'));
    engine.injectPoison(a, 0x2000, { mode: 'simulate' });
    await engine.whenIdle();
    try {
      a.write(0, Buffer.from('HELLO'));
    } catch (e) {
      expect(e).toMatchObject({ code: 'ERR_POISONED' }); // refused (whole huge page lost): no divergence
      return;
    }
    expect(b.read(0, 5).toString(), 'one file mapped twice: the recovered region diverged from the other').toBe('HELLO');
  });

  it('a failed mapRegion leaves an existing file as it was (no ftruncate to the requested size)', () => {
    const engine = openEngine();
    const p = hugeFile('grow');
    fs.writeFileSync(p, '');
    fs.truncateSync(p, 2 * MiB);
    expect(() => engine.mapRegion({ name: 'big', path: p, size: 2 ** 40 })).toThrow(expect.objectContaining({ code: 'ENOMEM', syscall: 'mmap' }));
    expect(fs.statSync(p).size).toBe(2 * MiB);
  });

  it('unmapRegion while a vCPU load runs on the region: no crash', () => {
    const r = runChild(`
      const { RasEngine } = ${PKG};
      const { startVcpuLoad, fillPattern } = ${TESTING};
      const e = RasEngine.open({ reserveBytes: 0 });
      const region = e.mapRegion({ name: 'a', path: process.env.F, size: 2 << 20 });
      fillPattern(region, 1);
      const load = startVcpuLoad(e, { region, threads: 2, seed: 1 });
      setTimeout(async () => {
        try { e.unmapRegion(region); console.log('unmapped'); } catch (x) { console.log('refused', x.code); }
        setTimeout(async () => { await load.stop().catch(() => {}); e.close(); console.log('survived'); }, 200);
      }, 100);
    `, { F: hugeFile('unmap-load') });
    expect({ signal: r.signal, stdout: r.stdout.trim().split('\n').pop() }).toEqual({ signal: null, stdout: 'survived' });
  });

  it('close() while paused with a vCPU load running: no crash', () => {
    const r = runChild(`
      const { RasEngine } = ${PKG};
      const { startVcpuLoad, fillPattern } = ${TESTING};
      const e = RasEngine.open({ reserveBytes: 0 });
      const region = e.mapRegion({ name: 'a', path: process.env.F, size: 2 << 20 });
      fillPattern(region, 1);
      startVcpuLoad(e, { region, threads: 2, seed: 1 });
      e.pause();
      setTimeout(() => { e.close(); setTimeout(() => console.log('survived'), 300); }, 100);
    `, { F: hugeFile('paused-close') });
    expect({ signal: r.signal, stdout: r.stdout.trim() }).toEqual({ signal: null, stdout: 'survived' });
  });

  it('startVcpuLoad refuses a region of another engine (else closing that engine kills the process)', () => {
    const r = runChild(`
      const { RasEngine } = ${PKG};
      const { startVcpuLoad, fillPattern } = ${TESTING};
      const a = RasEngine.open({ reserveBytes: 0 });
      const b = RasEngine.open({ reserveBytes: 0 });
      const region = b.mapRegion({ name: 'a', path: process.env.F, size: 2 << 20 });
      fillPattern(region, 1);
      try { startVcpuLoad(a, { region, threads: 2, seed: 1 }); console.log('accepted'); } catch (x) { console.log('refused ' + x.code); }
      setTimeout(() => { b.close(); setTimeout(() => { a.close(); console.log('survived'); }, 300); }, 100);
    `, { F: hugeFile('foreign-load') });
    expect({ signal: r.signal, stdout: r.stdout.trim() }).toEqual({ signal: null, stdout: expect.stringMatching(/^refused ERR_[A-Z_]+\nsurvived$/) });
  });

  it('startVcpuLoad on a closed engine, or with something that is not an engine, starts no threads', () => {
    for (const engineExpr of ['closed', 'undefined', '({})']) {
      const r = runChild(`
        const { RasEngine } = ${PKG};
        const { startVcpuLoad, fillPattern } = ${TESTING};
        const owner = RasEngine.open({ reserveBytes: 0 });
        const closed = RasEngine.open({ reserveBytes: 0 }); closed.close();
        const region = owner.mapRegion({ name: 'a', path: process.env.F, size: 2 << 20 });
        fillPattern(region, 1);
        try { startVcpuLoad(${engineExpr}, { region, threads: 2, seed: 1 }); console.log('accepted'); }
        catch (x) { console.log(x.code ? 'refused ' + x.code : 'uncoded ' + x.constructor.name); }
        setTimeout(() => { owner.close(); setTimeout(() => console.log('survived'), 300); }, 100);
      `, { F: hugeFile('not-engine') });
      expect({ engine: engineExpr, signal: r.signal, stdout: r.stdout.trim() }).toEqual({
        engine: engineExpr,
        signal: null,
        stdout: expect.stringMatching(/^refused ERR_[A-Z_]+\nsurvived$/),
      });
    }
  });

  it('vCPU loads cannot take every thread slot: the limit is a coded error, guarded access keeps working', () => {
    // The vCPUs all wait on a poisoned huge page of a paused engine (futex, no CPU) while holding
    // their thread slots. Before the fix, threads past the 256th slot silently did nothing, and the
    // JS thread, left without a slot, got a bogus fault from read(), an all-zero "clean" result from
    // verifyPattern() and a null-pointer crash from fillPattern().
    const r = runChild(`
      const { RasEngine } = ${PKG};
      const { startVcpuLoad, fillPattern, verifyPattern } = ${TESTING};
      const e = RasEngine.open({ reserveBytes: 0 });
      const region = e.mapRegion({ name: 'a', path: process.env.F, size: 4 << 20 });
      fillPattern(region, 1);
      e.pause();
      e.injectPoison(region, 0, { mode: 'simulate' });
      const loads = [];
      let refused = null;
      for (let i = 0; i < 20 && !refused; i++) {
        try { loads.push(startVcpuLoad(e, { region, threads: 64, seed: 1, window: { offset: 0, length: 4096 } })); }
        catch (x) { refused = x.code || 'uncoded ' + x.constructor.name; }
      }
      setTimeout(async () => {
        const out = { loads: loads.length, refused };
        try { region.read(2 << 20, 8); out.read = 'ok'; } catch (x) { out.read = x.code + ': ' + x.message; }
        try { const v = verifyPattern(region, 2); out.verifyWrongSeed = v.checkedBytes + ' checked, ' + v.wrongBytes + ' wrong'; }
        catch (x) { out.verifyWrongSeed = x.code; }
        try { fillPattern(region, 1); out.fill = 'ok'; } catch (x) { out.fill = x.code; }
        console.log(JSON.stringify(out));
        for (const l of loads) await l.stop(); // while still paused: the waiting vCPUs must be released
        e.resume();
        e.close();
        console.log('survived');
      }, 300);
    `, { F: hugeFile('slots') });
    expect(r.signal, `the process died: ${r.stdout}`).toBeNull();
    const out = JSON.parse(r.stdout.split('\n')[0]) as { loads: number; refused: string | null; read: string; verifyWrongSeed: string };
    expect(out.refused, `no limit on vCPU threads (${out.loads} loads of 64 accepted)`).toMatch(/^ERR_[A-Z_]+$/);
    expect(out.read, 'read with the vCPU slots all taken').toBe('ok');
    expect(out.verifyWrongSeed, 'verifyPattern with the vCPU slots all taken').toMatch(/^2097152 checked, [1-9]\d* wrong$/);
    expect(r.stdout).toContain('survived');
  });

  // Under AddressSanitizer (scripts/check-asan.sh) the child cannot start with an address-space
  // limit: ASan reserves terabytes of shadow memory.
  const underAsan = /libasan/.test(process.env.LD_PRELOAD ?? '');
  it.skipIf(underAsan)("reserveBytes beyond the machine's memory is refused (it would be pre-faulted: OOM)", () => {
    // An address-space limit makes the reserve's mmap fail here instead of pre-faulting 32 TiB.
    const r = runLimited(
      `
      const { RasEngine } = ${PKG};
      try {
        const e = RasEngine.open({ reserveBytes: 2 ** 45 });
        setTimeout(() => { const s = e.stats(); e.close(); console.log('accepted target=' + s.reserveTarget + ' have=' + s.reserveBytes); }, 200);
      } catch (x) { console.log('refused ' + x.code); }
    `,
      8 * 1024 * 1024,
    );
    expect(r.signal).toBeNull();
    expect(r.stdout.trim(), `total memory ${os.totalmem()}`).toMatch(/^refused ERR_[A-Z_]+$/);
  });
});