// Issue 19 #17: on a kernel without guard markers (before 6.13) and without poison markers (before
// 6.6, or no userfaultfd poison here), the eager swap used to move the whole block in PROT_NONE and
// open its healthy runs afterwards. For that moment a kernel-mode access to any healthy byte of the
// page failed with EFAULT: what KVM_RUN returns for a vCPU touching it (a QEMU-style VMM aborts).
// A test switch holds the swap at that moment (native/testing/swap_hold.h); a kernel-mode read
// (pwrite from guest memory) stands in for KVM's access.
import { describe, expect, it } from 'vitest';
import { native } from '../src/native';
import { fillPattern, startVcpuLoad, verifyPattern } from '../src/testing';
import { hugeFile, MiB, openEngine, seededBytes, SUB } from './helpers';
import { until } from './helpers/time';

const t = native as unknown as {
  testHoldInSwap(set: number): number;
  testKernelRead(address: bigint, len: number): Buffer | number;
};

describe('the eager swap without guard or poison markers', () => {
  it('healthy memory stays accessible to the kernel during the swap; the lost subpage is guarded after it', { timeout: 60_000 }, async () => {
    native.useGuardMarkers(false); // the path of kernels before 6.13
    try {
      const engine = openEngine({ lostPageGuard: 'guard', lazyRecovery: false });
      const region = engine.mapRegion({ name: 'sw', path: hugeFile('swap'), size: 4 * MiB });
      const data = seededBytes(17, region.size);
      region.write(0, data);
      const lost = 2 * MiB + 7 * SUB;
      t.testHoldInSwap(1);
      let during: (Buffer | number)[] = [];
      try {
        engine.injectPoison(region, lost, { mode: 'simulate', kind: 'AO' });
        await until(() => t.testHoldInSwap(-1) === 2, 30_000);
        // The block is in place, its lost subpage not guarded yet: read healthy bytes as KVM would.
        during = [2 * MiB, lost - SUB, lost + SUB, 4 * MiB - SUB].map((o) => t.testKernelRead(region.address + BigInt(o), SUB));
      } finally {
        t.testHoldInSwap(0);
      }
      await engine.whenIdle({ timeoutMs: 30_000 });
      expect(during.map((d) => (typeof d === 'number' ? `errno ${d}` : 'read'))).toEqual(['read', 'read', 'read', 'read']);
      [2 * MiB, lost - SUB, lost + SUB, 4 * MiB - SUB].forEach((o, i) => expect((during[i] as Buffer).equals(data.subarray(o, o + SUB))).toBe(true));
      // After the swap: the lost subpage is guarded (a kernel access fails, a thread gets an MCE report),
      // everything else is the guest's.
      expect(engine.lostPages().map((p) => p.offset)).toEqual([lost]);
      expect(engine.lostPageGuard).toBe('guard');
      expect(t.testKernelRead(region.address + BigInt(lost), SUB)).toBe(14); // EFAULT
      expect(() => region.read(lost, 1)).toThrow(expect.objectContaining({ code: 'ERR_POISONED' }));
      expect(region.read(2 * MiB, 7 * SUB).equals(data.subarray(2 * MiB, lost))).toBe(true);
      expect(region.read(lost + SUB, 2 * MiB - 8 * SUB).equals(data.subarray(lost + SUB, 4 * MiB))).toBe(true);
    } finally {
      native.useGuardMarkers(true);
    }
  });

  it('a vCPU thread that touches the lost subpage during the swap waits, then gets its machine-check report, never a zero', { timeout: 60_000 }, async () => {
    native.useGuardMarkers(false);
    try {
      const engine = openEngine({ lostPageGuard: 'guard', lazyRecovery: false });
      const region = engine.mapRegion({ name: 'sw2', path: hugeFile('swap2'), size: 4 * MiB });
      fillPattern(region, 23);
      const lost = 2 * MiB + 9 * SUB;
      t.testHoldInSwap(1);
      let load;
      try {
        engine.injectPoison(region, lost, { mode: 'simulate', kind: 'AO' });
        await until(() => t.testHoldInSwap(-1) === 2, 30_000);
        // Its first touch is in the window: the block in place, the lost subpage not guarded yet.
        load = startVcpuLoad(engine, { region, threads: 1, seed: 23, writeRatio: 0, window: { offset: lost - SUB, length: 3 * SUB } });
        await new Promise((r) => setTimeout(r, 50));
      } finally {
        t.testHoldInSwap(0);
      }
      await engine.whenIdle({ timeoutMs: 30_000 });
      await new Promise((r) => setTimeout(r, 100));
      const rep = await load.stop();
      expect(rep.wrongBytes).toBe(0);
      expect(rep.mceReports.length).toBeGreaterThan(0);
      expect([...new Set(rep.mceReports.map((m) => m.offset - (m.offset % SUB)))]).toEqual([lost]);
      expect(engine.lostPages().map((p) => p.offset)).toEqual([lost]);
      expect(verifyPattern(region, 23)).toMatchObject({ wrongBytes: 0, unreadableOffsets: [lost] });
    } finally {
      native.useGuardMarkers(true);
    }
  });
});
