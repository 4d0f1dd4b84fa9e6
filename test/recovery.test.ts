import { describe, expect, it } from 'vitest';
import { PoisonError, type RecoveredEvent, type PoisonEvent } from '../src/index';
import { fillPattern, startVcpuLoad, verifyPattern } from '../src/testing';
import { hugeFile, MiB, openEngine, seededBytes, smapsAt, SUB } from './helpers';

const GPA = 0x1_0000_0000n;

describe('split recovery of a 2 MiB page (simulated poison)', () => {
  it.each([
    ['first', 0],
    ['middle', 255 * SUB],
    ['last', 511 * SUB],
  ])('poison at the %s subpage: every healthy byte back, one lost frame at the right guest address', async (_where, sub) => {
    const engine = openEngine();
    const region = engine.mapRegion({ name: 'ram', path: hugeFile('split'), size: 6 * MiB, guestPhysAddr: GPA });
    expect(region.hugePageSize).toBe(2 * MiB);
    const data = seededBytes(sub + 1, region.size);
    region.write(0, data);
    const recovered: RecoveredEvent[] = [];
    const poisons: PoisonEvent[] = [];
    engine.on('recovered', (e) => recovered.push(e));
    engine.on('poison', (e) => poisons.push(e));

    const page = 1;
    const offset = page * 2 * MiB + sub;
    const injected = engine.injectPoison(region, offset + 123, { mode: 'simulate' });
    expect(injected.mode).toBe('simulate');
    expect(injected.hostAddress).toBe(region.address + BigInt(offset));
    await engine.whenIdle({ timeoutMs: 10_000 });

    expect(poisons).toHaveLength(1);
    expect(poisons[0]).toMatchObject({ region: 'ram', kind: 'AR', reportedLsb: 21, pageSize: 2 * MiB, hugePageIndex: page, alreadyLost: false });
    expect(poisons[0].guestPhysAddr).toBe(GPA + BigInt(offset));
    expect(recovered).toHaveLength(1);
    expect(recovered[0].lostGuestPhysAddrs).toEqual([GPA + BigInt(offset)]);
    expect(recovered[0].bytesRecovered).toBe(2 * MiB - SUB);
    expect(recovered[0].hugePageGuestPhysAddr).toBe(GPA + BigInt(page * 2 * MiB));
    expect(engine.lostPages()).toEqual([
      expect.objectContaining({ region: 'ram', guestPhysAddr: GPA + BigInt(offset), offset, size: SUB, cause: 'recovered' }),
    ]);

    // Every healthy byte of the whole region reads back identical.
    const before = region.read(0, offset);
    expect(before.equals(data.subarray(0, offset))).toBe(true);
    const after = region.read(offset + SUB, region.size - offset - SUB);
    expect(after.equals(data.subarray(offset + SUB))).toBe(true);

    // The lost frame stays inaccessible: guarded access throws, with the frame's address.
    let err: unknown;
    try {
      region.read(offset + 8, 8);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(PoisonError);
    expect(err).toMatchObject({ code: 'ERR_POISONED', region: 'ram', offset: offset + 8, guestPhysAddr: GPA + BigInt(offset + 8) });
    expect(() => region.write(offset, Buffer.alloc(1))).toThrow(PoisonError);

    // The healthy memory is writable again, and the page is no longer a hugetlb mapping.
    region.write(offset + SUB, Buffer.from('still alive'));
    expect(region.read(offset + SUB, 11).toString()).toBe('still alive');
    const healthyInPage = page * 2 * MiB + (sub === 0 ? SUB : 0);
    const sm = smapsAt(region.address + BigInt(healthyInPage));
    expect(sm?.kernelPageKb).toBe(4);
  });

  it('keeps the range free of partial data: vCPU threads stall, resume, never see a wrong byte', async () => {
    const engine = openEngine({ reserveBytes: 'auto' });
    const region = engine.mapRegion({ name: 'ram', path: hugeFile('vcpu'), size: 4 * MiB, guestPhysAddr: GPA });
    fillPattern(region, 42);
    const load = startVcpuLoad(engine, { region, threads: 4, seed: 42, window: { offset: 2 * MiB, length: 2 * MiB } });
    await new Promise((r) => setTimeout(r, 30));
    engine.injectPoison(region, 2 * MiB + 77 * SUB, { mode: 'simulate', signal: false }); // silent: vCPUs find it
    await new Promise((r) => setTimeout(r, 50));
    await engine.whenIdle({ timeoutMs: 10_000 });
    await new Promise((r) => setTimeout(r, 50));
    const report = await load.stop();
    expect(report.accesses).toBeGreaterThan(1000);
    expect(report.wrongBytes).toBe(0);
    // The first vCPU to touch the poisoned page stalled until it was recovered.
    expect(report.stalls.length).toBeGreaterThan(0);
    for (const s of report.stalls) {
      expect(s.offset >= 2 * MiB && s.offset < 4 * MiB).toBe(true);
      expect(s.stallNs).toBeGreaterThan(0n);
    }
    // Touching the lost frame is an MCE report for the guest, not a crash.
    expect(report.mceReports.length).toBeGreaterThan(0);
    for (const m of report.mceReports) expect(m.guestPhysAddr & ~0xfffn).toBe(GPA + BigInt(2 * MiB + 77 * SUB));
    const check = verifyPattern(region, 42);
    expect(check.wrongBytes).toBe(0);
    expect(check.unreadableOffsets).toEqual([2 * MiB + 77 * SUB]);
    expect(check.checkedBytes).toBe(4 * MiB - SUB);
  });

  it('handles an action-optional (AO) report without any thread faulting', async () => {
    const engine = openEngine();
    const region = engine.mapRegion({ name: 'ram', path: hugeFile('ao'), size: 2 * MiB });
    fillPattern(region, 5);
    const kinds: string[] = [];
    engine.on('poison', (e) => kinds.push(e.kind));
    engine.injectPoison(region, 9 * SUB, { mode: 'simulate', kind: 'AO' });
    await engine.whenIdle({ timeoutMs: 10_000 });
    expect(kinds).toEqual(['AO']);
    expect(engine.lostPages().map((p) => p.offset)).toEqual([9 * SUB]);
    expect(verifyPattern(region, 5)).toMatchObject({ wrongBytes: 0, unreadableOffsets: [9 * SUB] });
  });

  it('records two poisons that land in one huge page before recovery runs', async () => {
    const engine = openEngine();
    const region = engine.mapRegion({ name: 'ram', path: hugeFile('two'), size: 2 * MiB, guestPhysAddr: GPA });
    fillPattern(region, 9);
    engine.pause();
    engine.injectPoison(region, 3 * SUB, { mode: 'simulate' });
    engine.injectPoison(region, 400 * SUB, { mode: 'simulate' });
    await expect(engine.whenIdle({ timeoutMs: 50 })).rejects.toMatchObject({ code: 'ERR_TIMEOUT' });
    expect(engine.lostPages()).toEqual([]);
    engine.resume();
    await engine.whenIdle({ timeoutMs: 10_000 });
    expect(engine.lostPages().map((p) => p.guestPhysAddr)).toEqual([GPA + BigInt(3 * SUB), GPA + BigInt(400 * SUB)]);
    const check = verifyPattern(region, 9);
    expect(check).toMatchObject({ wrongBytes: 0, unreadableOffsets: [3 * SUB, 400 * SUB] });
    expect(check.checkedBytes).toBe(510 * SUB);
  });

  it('records a second poison in an already split huge page', async () => {
    const engine = openEngine();
    const region = engine.mapRegion({ name: 'ram', path: hugeFile('second'), size: 2 * MiB, guestPhysAddr: GPA });
    fillPattern(region, 3);
    const lost: bigint[] = [];
    engine.on('lost', (e) => lost.push(e.guestPhysAddr));
    engine.injectPoison(region, 10 * SUB, { mode: 'simulate' });
    await engine.whenIdle({ timeoutMs: 10_000 });
    engine.injectPoison(region, 20 * SUB, { mode: 'simulate' });
    await engine.whenIdle({ timeoutMs: 10_000 });
    expect(lost).toEqual([GPA + BigInt(20 * SUB)]);
    expect(engine.lostPages().map((p) => [p.offset, p.cause])).toEqual([
      [10 * SUB, 'recovered'],
      [20 * SUB, 'split-poison'],
    ]);
    expect(() => region.read(20 * SUB, 1)).toThrow(PoisonError);
    expect(verifyPattern(region, 3)).toMatchObject({ wrongBytes: 0, unreadableOffsets: [10 * SUB, 20 * SUB] });
  });

  it('a poison that arrives while its huge page is being recovered is not lost', async () => {
    const engine = openEngine();
    const region = engine.mapRegion({ name: 'ram', path: hugeFile('during'), size: 2 * MiB, guestPhysAddr: GPA });
    fillPattern(region, 11);
    engine.pause();
    engine.injectPoison(region, 500 * SUB, { mode: 'simulate' });
    engine.resume();
    // Races the worker. Poisoned before the recovery read that subpage: the read fails and it is lost.
    // After: the read copied it intact, the poison hit a page nobody maps any more, nothing is lost
    // (issue 20 #6: the read decides). Either way no wrong byte, and what is lost is exactly what the
    // engine records: nothing forgotten, nothing invented.
    engine.injectPoison(region, 1 * SUB, { mode: 'simulate' });
    await engine.whenIdle({ timeoutMs: 10_000 });
    const check = verifyPattern(region, 11);
    await engine.whenIdle({ timeoutMs: 10_000 });
    const lost = engine.lostPages().map((p) => p.offset).sort((a, b) => a - b);
    expect(lost).toContain(500 * SUB);
    expect(lost.every((o) => o === 1 * SUB || o === 500 * SUB)).toBe(true);
    expect(check).toMatchObject({ wrongBytes: 0, unreadableOffsets: lost });
  });
});
