import { describe, expect, it } from 'vitest';
import type { PoisonEvent, RecoveredEvent } from '../src/index';
import { native } from '../src/native';
import { fillPattern, startVcpuLoad, verifyPattern } from '../src/testing';
import { DIR_1G, GiB, has1G, hugeFile, MiB, openEngine, sleep, SUB, until } from './helpers';

describe('many vCPUs, repeated errors', () => {
  it('8 vCPU threads fault on one poisoned huge page at once: one recovery, all resume, every report counted', async () => {
    const engine = openEngine({ reserveBytes: 'auto' });
    const region = engine.mapRegion({ name: 'ram', path: hugeFile('8vcpu'), size: 2 * MiB, guestPhysAddr: 0x1000_0000n });
    fillPattern(region, 99);
    const recovered: RecoveredEvent[] = [];
    const poisons: PoisonEvent[] = [];
    engine.on('recovered', (e) => recovered.push(e));
    engine.on('poison', (e) => poisons.push(e));
    const before = native.counters();
    const load = startVcpuLoad(engine, { region, threads: 8, seed: 99 });
    await sleep(50);
    // Paused, so that all 8 find the poison and stall before anything is recovered (on 2 cores
    // the recovery would otherwise finish before most vCPUs even ran).
    engine.pause();
    engine.injectPoison(region, 300 * SUB, { mode: 'simulate', signal: false });
    await until(() => native.counters().captured - before.captured >= 8);
    engine.resume();
    await until(() => recovered.length > 0);
    await sleep(100);
    await engine.whenIdle({ timeoutMs: 10_000 });
    const report = await load.stop();
    const after = native.counters();

    expect(recovered).toHaveLength(1);
    expect(recovered[0].lostGuestPhysAddrs).toEqual([0x1000_0000n + BigInt(300 * SUB)]);
    // Every vCPU was on that page: each stalled once, and each resumed (stop() joined them all).
    expect(new Set(report.stalls.map((s) => s.thread))).toEqual(new Set([0, 1, 2, 3, 4, 5, 6, 7]));
    expect(report.wrongBytes).toBe(0);
    // Every report reached JS as a poison event: none dropped, all merged into one recovery.
    expect(after.overflow).toBe(before.overflow);
    expect(poisons).toHaveLength(after.captured - before.captured);
    expect(poisons.filter((p) => !p.alreadyLost).length).toBeGreaterThanOrEqual(8);
    expect(verifyPattern(region, 99)).toMatchObject({ wrongBytes: 0, unreadableOffsets: [300 * SUB] });
  });

  it.skipIf(!has1G())('a slow 1 GiB recovery does not hold up a 2 MiB one', async () => {
    // The eager path's slow lane (the lazy one puts a 1 GiB page in place in well under a ms).
    const engine = openEngine({ reserveBytes: 'auto', lazyRecovery: false });
    const big = engine.mapRegion({ name: 'big', path: hugeFile('lane1g', DIR_1G), size: GiB, guestPhysAddr: 0n });
    const small = engine.mapRegion({ name: 'small', path: hugeFile('lane2m'), size: 2 * MiB, guestPhysAddr: 0x8000_0000n });
    fillPattern(big, 1);
    fillPattern(small, 2);
    await until(() => engine.stats().reserveBytes >= engine.stats().reserveTarget, 60_000);
    const done: RecoveredEvent[] = [];
    engine.on('recovered', (e) => done.push(e));
    // Both reports wait while paused, the 1 GiB one first: the recovery threads alone decide
    // what finishes first, not how fast this JS thread gets to the second injection.
    engine.pause();
    engine.injectPoison(big, 1000 * SUB, { mode: 'simulate', kind: 'AO' });
    engine.injectPoison(small, 7 * SUB, { mode: 'simulate', kind: 'AO' });
    engine.resume();
    await engine.whenIdle({ timeoutMs: 60_000 });
    expect(done.map((e) => e.region)).toEqual(['small', 'big']);
    const [s, b] = done;
    // The 2 MiB page was usable long before the 1 GiB read-back ended.
    expect(Number(s.totalNs)).toBeLessThan(Number(b.durationNs) / 5);
    expect(verifyPattern(small, 2)).toMatchObject({ wrongBytes: 0, unreadableOffsets: [7 * SUB] });
    expect(verifyPattern(big, 1)).toMatchObject({ wrongBytes: 0, unreadableOffsets: [1000 * SUB] });
  });

  it.each([
    ['guard markers (Linux >= 6.13)', true],
    ['PROT_NONE swap (older kernels)', false],
  ])('stress with %s: many threads, many pages, AR and AO in random order; the ledger and every healthy byte are right', async (_path, markers) => {
    native.useGuardMarkers(markers);
    const seed = Number(process.env.STRESS_SEED ?? Date.now() % 100_000);
    const pages = 24;
    let x = seed >>> 0 || 1;
    const rand = (n: number) => {
      // mulberry32: a small generator with good low bits
      x = (x + 0x6d2b79f5) >>> 0;
      let t = x;
      t = Math.imul(t ^ (t >>> 15), t | 1);
      t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
      return ((t ^ (t >>> 14)) >>> 0) % n;
    };
    try {
      const engine = openEngine({ reserveBytes: 'auto' });
      const region = engine.mapRegion({ name: 'ram', path: hugeFile('stress'), size: pages * 2 * MiB, guestPhysAddr: 0x4_0000_0000n });
      fillPattern(region, seed);
      const load = startVcpuLoad(engine, { region, threads: 8, seed, writeRatio: 0.5 });
      const injected = new Set<number>();
      for (let i = 0; i < 60; i++) {
        // Clustered on a few pages so that second poisons, poisons during recovery and poisons in
        // split pages all happen.
        const page = rand(4) === 0 ? rand(pages) : rand(6);
        const off = page * 2 * MiB + rand(512) * SUB;
        injected.add(off);
        engine.injectPoison(region, off, { mode: 'simulate', kind: rand(3) === 0 ? 'AO' : 'AR' });
        if (rand(3) === 0) await sleep(rand(3));
      }
      await engine.whenIdle({ timeoutMs: 30_000 });
      await sleep(50);
      const report = await load.stop();
      await engine.whenIdle({ timeoutMs: 30_000 });
      // A poison injected into a page under recovery after the read-back copied that subpage hit the
      // old page only: nothing of the guest's is lost there (issue 20 #6), the frame reads back right.
      // Every other injected frame is lost; no frame outside the injected ones is.
      const expected = engine.lostPages().map((p) => p.offset);
      expect(report.wrongBytes).toBe(0);
      expect(expected.every((o) => injected.has(o))).toBe(true);
      expect(expected.length).toBeGreaterThan(injected.size / 2);
      for (const p of engine.lostPages()) expect(p.size).toBe(SUB);
      const check = verifyPattern(region, seed);
      expect(check.wrongBytes).toBe(0);
      expect(check.unreadableOffsets).toEqual([...expected].sort((a, b) => a - b));
      expect(check.checkedBytes).toBe(region.size - expected.length * SUB);
      expect(native.counters().overflow).toBe(0);
    } catch (err) {
      console.error(`stress test failed with STRESS_SEED=${seed}`);
      throw err;
    } finally {
      native.useGuardMarkers(true);
    }
  });
});
