// Fuzz properties: reset, unmap, the other entry points, closed engines. (Harness and generators: harness.ts, generators.ts.)
import * as fs from 'node:fs';
import * as path from 'node:path';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { Region } from '../../src/index';
import { fillPattern, startVcpuLoad, verifyPattern } from '../../src/testing';
import { DIR_2M, hugeFile, MiB } from '../helpers';
import { hostile } from './generators';
import {
  attempt,
  CANARY_SEED,
  expectCanaries,
  expectCleanFailure,
  fixture,
  params,
  show,
  PREFIX,
  world,
} from './harness';

describe('fuzz: hostile arguments get a coded error and change nothing', () => {
  it('engine.resetRegion / unmapRegion / hugeMappedShare with foreign, closed, fake and live regions', async () => {
    const fx = fixture();
    let n = 0;
    const arb = fc.record({
      method: fc.constantFrom('resetRegion', 'unmapRegion', 'hugeMappedShare'),
      which: fc.constantFrom('foreign', 'unmapped', 'dead', 'fake', 'fake', 'fresh', 'sick', 'canary'),
      fake: fc.nat({ max: fx.fakes.length - 1 }),
      index: fc.oneof(fc.constantFrom<unknown>(0, 1, 2), hostile),
    });
    await fc.assert(
      fc.asyncProperty(arb, async ({ method, which, fake, index }) => {
        if (method === 'unmapRegion' && which === 'canary') return; // it would work: the canary is needed
        let live: Region | undefined;
        if (which === 'fresh' || which === 'sick') {
          live = fx.engine.mapRegion({ name: `live${n++}`, path: hugeFile('live'), size: 4 * MiB, guestPhysAddr: 1n << 36n });
          fillPattern(live, 31);
          if (which === 'sick') {
            fx.engine.injectPoison(live, 0x7000, { mode: 'simulate' });
            fx.engine.injectPoison(live, 2 * MiB + 5, { mode: 'simulate', kind: 'AO' });
            await fx.engine.whenIdle();
          }
        }
        const region = { foreign: fx.foreign, unmapped: fx.unmapped, dead: fx.deadRegion, fake: fx.fakes[fake], canary: fx.canary, fresh: live, sick: live }[which] as Region;
        const before = world(fx);
        const what = `${method}(${which}${method === 'hugeMappedShare' ? `, ${show(index)}` : ''})`;
        try {
          const out = await attempt(() =>
            method === 'resetRegion'
              ? fx.engine.resetRegion(region)
              : method === 'unmapRegion'
                ? fx.engine.unmapRegion(region)
                : fx.engine.hugeMappedShare(region, index as number),
          );
          if (!out.ok) {
            expectCleanFailure(fx, out.error, before, what);
            expect(['fresh', 'sick', 'canary'].includes(which) && method !== 'hugeMappedShare', `${what}: refused a live region`).toBe(false);
            return;
          }
          if (method === 'unmapRegion') live = undefined;
          expect(['fresh', 'sick', 'canary'], `${what}: accepted a region that is not the engine's`).toContain(which);
          if (method === 'unmapRegion') {
            const file = path.resolve(region.path);
            expect(fs.readFileSync('/proc/self/maps', 'utf8').split('\n').filter((l) => l.includes(file)), `${what}: still mapped`).toEqual([]);
            expect(() => region.read(0, 1), what).toThrow(expect.objectContaining({ code: 'ERR_REGION_CLOSED' }));
          } else if (method === 'resetRegion') {
            const ev = out.value as { restoredHugePages: number };
            expect(ev.restoredHugePages, what).toBe(which === 'sick' ? 2 : 0);
            expect(fx.engine.lostPages().filter((l) => l.region === region.name), what).toEqual([]);
            expect(region.read(0x7000, 8).length, what).toBe(8);
          } else {
            expect(typeof out.value, what).toBe('number');
          }
          expectCanaries(fx, what);
        } finally {
          if (live) {
            fx.engine.unmapRegion(live);
          }
          for (const f of fs.readdirSync(DIR_2M)) if (f.startsWith(`${PREFIX}live-`)) fs.rmSync(path.join(DIR_2M, f), { force: true });
        }
      }),
      params(100),
    );
  });

  it('the other entry points: whenIdle, fillPattern, verifyPattern, pause/resume, stats', async () => {
    const fx = fixture();
    const arb = fc.record({
      call: fc.constantFrom('whenIdle', 'fillPattern', 'verifyPattern', 'pauseResume', 'stats'),
      region: fc.oneof(fc.constantFrom<unknown>('canary', 'unmapped', 'dead'), fc.constantFrom(...fx.fakes.map((_, i) => i))),
      arg: fc.oneof(fc.constantFrom<unknown>(undefined, {}, { timeoutMs: 0 }, { timeoutMs: 50 }, CANARY_SEED), hostile, fc.record({ timeoutMs: hostile })),
    });
    await fc.assert(
      fc.asyncProperty(arb, async ({ call, region: which, arg }) => {
        const region = (typeof which === 'number' ? fx.fakes[which] : { canary: fx.canary, unmapped: fx.unmapped, dead: fx.deadRegion }[which as string]) as Region;
        const before = world(fx);
        const what = `${call}(${call === 'whenIdle' || call === 'stats' || call === 'pauseResume' ? '' : `${String(typeof which === 'number' ? `fake#${which}` : which)}, `}${show(arg)})`;
        const out = await attempt(async () => {
          switch (call) {
            case 'whenIdle':
              return fx.engine.whenIdle(arg as never);
            case 'fillPattern':
              // Only the canary's own seed may be written over the canary.
              return fillPattern(region, region === fx.canary ? CANARY_SEED : (arg as number));
            case 'verifyPattern':
              return verifyPattern(region, arg as number);
            case 'pauseResume':
              fx.engine.pause();
              fx.engine.resume();
              return undefined;
            default:
              return fx.engine.stats();
          }
        });
        if (!out.ok) return expectCleanFailure(fx, out.error, before, what);
        expect(world(fx), what).toEqual(before);
        expectCanaries(fx, what);
      }),
      params(150),
    );
  });

  it('a closed engine refuses every call with ERR_ENGINE_CLOSED / ERR_REGION_CLOSED and changes nothing', async () => {
    const fx = fixture();
    const dead = fx.dead;
    const deadRegion = fx.deadRegion;
    const arb = fc.record({
      call: fc.constantFrom(
        'mapRegion', 'unmapRegion', 'injectPoison', 'pause', 'resume', 'resetRegion', 'stats', 'hugeMappedShare',
        'read', 'write', 'fillPattern', 'verifyPattern', 'startVcpuLoad', 'close', 'whenIdle', 'lostPages',
      ),
      valid: fc.boolean(),
      a: hostile,
      b: hostile,
    });
    await fc.assert(
      fc.asyncProperty(arb, async ({ call, valid, a, b }) => {
        const file = hugeFile('closed');
        const before = world(fx);
        const what = `closed engine: ${call}(${valid ? 'valid arguments' : `${show(a)}, ${show(b)}`})`;
        const out = await attempt<unknown>(() => {
          switch (call) {
            case 'mapRegion':
              return dead.mapRegion((valid ? { name: 'again', path: file, size: 2 * MiB, guestPhysAddr: 1n << 37n } : a) as never);
            case 'unmapRegion':
              return dead.unmapRegion((valid ? deadRegion : a) as never);
            case 'injectPoison':
              return dead.injectPoison((valid ? deadRegion : a) as never, (valid ? 0 : b) as never, { mode: 'simulate' });
            case 'pause':
              return dead.pause();
            case 'resume':
              return dead.resume();
            case 'resetRegion':
              return dead.resetRegion((valid ? deadRegion : a) as never);
            case 'stats':
              return dead.stats();
            case 'hugeMappedShare':
              return dead.hugeMappedShare(deadRegion, (valid ? 0 : a) as never);
            case 'read':
              return deadRegion.read((valid ? 0 : a) as never, (valid ? 8 : b) as never);
            case 'write':
              return deadRegion.write((valid ? 0 : a) as never, (valid ? Buffer.alloc(8) : b) as never);
            case 'fillPattern':
              return fillPattern(deadRegion, (valid ? 1 : a) as never);
            case 'verifyPattern':
              return verifyPattern(deadRegion, (valid ? 1 : a) as never);
            case 'startVcpuLoad':
              return startVcpuLoad(dead, { region: deadRegion, threads: valid ? 1 : (a as number), seed: 1 });
            case 'close':
              return dead.close();
            case 'whenIdle':
              return dead.whenIdle();
            default:
              return dead.lostPages();
          }
        });
        expect(fs.existsSync(file), `${what}: created ${file}`).toBe(false);
        if (['close', 'whenIdle', 'lostPages'].includes(call)) {
          expect(out.ok, what).toBe(true);
          if (call === 'lostPages') expect(out.ok && out.value, what).toEqual([]);
          expect(world(fx), what).toEqual(before);
          return;
        }
        expect(out.ok, `${what}: succeeded`).toBe(false);
        expectCleanFailure(fx, !out.ok && out.error, before, what);
        if (valid) expect((!out.ok && (out.error as { code: string }).code) as string, what).toMatch(/^ERR_(ENGINE|REGION)_CLOSED$/);
      }),
      params(150),
    );
  });
});
