import { describe, expect, it } from 'vitest';
import { PoisonError, type RefusedEvent } from '../src/index';
import { fillPattern, verifyPattern } from '../src/testing';
import type { Consumer } from '../src/policy';
import { hugeFile, MiB, openEngine, SUB } from './helpers';

const GPA = 0x8000_0000n;

describe('refusal where another party maps or pins the memory', () => {
  const cases: [string, { share?: boolean; consumers?: Consumer[] }, string][] = [
    ['share: true', { share: true }, 'shared-mapping'],
    ['vhost-user', { consumers: ['vhost-user'] }, 'vhost-user'],
    ['ivshmem', { consumers: ['ivshmem'] }, 'ivshmem'],
    ['vfio', { consumers: ['vfio'] }, 'vfio'],
  ];
  it.each(cases)('%s: refused, whole huge page lost, process alive, other pages served', async (_n, spec, reason) => {
    const engine = openEngine();
    const region = engine.mapRegion({ name: 'shm', path: hugeFile('refuse'), size: 4 * MiB, guestPhysAddr: GPA, ...spec });
    expect(region.eligible).toBe(false);
    expect(region.ineligibleReason).toBe(reason);
    fillPattern(region, 1);
    const refused: RefusedEvent[] = [];
    let recovered = 0;
    engine.on('refused', (e) => refused.push(e));
    engine.on('recovered', () => recovered++);
    engine.injectPoison(region, 2 * MiB + 7 * SUB, { mode: 'simulate' });
    await engine.whenIdle({ timeoutMs: 10_000 });
    expect(recovered).toBe(0);
    expect(refused).toHaveLength(1);
    expect(refused[0]).toMatchObject({ region: 'shm', hugePageIndex: 1, reason, size: 2 * MiB, hugePageGuestPhysAddr: GPA + BigInt(2 * MiB) });
    expect(refused[0].message.length).toBeGreaterThan(20);
    expect(engine.lostPages()).toEqual([expect.objectContaining({ offset: 2 * MiB, size: 2 * MiB, cause: 'refused', reason })]);
    // Every byte of the huge page is gone (not just the poisoned 4 KiB); the other page is served.
    expect(() => region.read(2 * MiB, 1)).toThrow(PoisonError);
    expect(() => region.read(4 * MiB - 1, 1)).toThrow(PoisonError);
    const check = verifyPattern(region, 1);
    expect(check.wrongBytes).toBe(0);
    expect(check.checkedBytes).toBe(2 * MiB);
    expect(check.unreadableOffsets).toHaveLength(512);
    region.write(0, Buffer.from('alive'));
    expect(region.read(0, 5).toString()).toBe('alive');
  });

  it('refuses on a kernel that cannot read around poison (before 6.5)', async () => {
    const engine = openEngine({ kernelReadsAroundPoison: false });
    const region = engine.mapRegion({ name: 'ram', path: hugeFile('oldkernel'), size: 2 * MiB });
    expect(region.ineligibleReason).toBe('kernel-cannot-read-around-poison');
    const reasons: string[] = [];
    engine.on('refused', (e) => reasons.push(e.reason));
    engine.injectPoison(region, 0, { mode: 'simulate' });
    await engine.whenIdle({ timeoutMs: 10_000 });
    expect(reasons).toEqual(['kernel-cannot-read-around-poison']);
  });
});
