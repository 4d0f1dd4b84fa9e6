// Issue 22 #3 (Linux guest), the part a host without /dev/kvm can prove: the migration loop takes a
// VMM that is not the bare-metal one (the Linux mode: vmm/src/linux.ts) through the same stream.
// The stream says which kind of machine it carries, a destination opens that kind through its
// factory (never the bare-metal VMM for a Linux stream), and RAM, manifest and state arrive there.
// The KVM side (pause, LAPIC, irqchip, PIT, clock, devices) is the lab's case L3.
import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { hugeFile, MiB, openEngine, seededBytes, SUB } from './helpers';
import { migrateOut, type MigratableVm } from '../vmm/src/migration/source';
import { migrateIn, type RestorableVm } from '../vmm/src/migration/destination';
import { StreamError } from '../vmm/src/migration/stream';
import type { Region, RasEngine } from '../src/index';
import type { VmmRegionSpec } from '../vmm/src/vmm-types';

const GPA = 0x10000000n;

function sourceVm(engine: RasEngine, region: Region, spec: VmmRegionSpec, state: { vcpus: Buffer[]; vm: Buffer }, stoppedAt?: string) {
  const calls: string[] = [];
  const vm: MigratableVm = {
    engine,
    vcpus: state.vcpus.length,
    specs: [spec],
    streamKind: 'linux',
    region: (name) => {
      if (name !== spec.name) throw new Error(`no region ${name}`);
      return region;
    },
    pause: () => calls.push('pause'),
    // stoppedAt: the guest stops by itself (a triple fault) at that call.
    guestStopped: () => (stoppedAt && calls.includes(stoppedAt) ? 'triple-fault: guest triple fault (KVM_EXIT_SHUTDOWN) on vCPU 0' : undefined),
    machine: {
      dirtyLog: (on) => calls.push(`dirtyLog ${on}`),
      // Nothing written since the first pass.
      takeDirty: () => [Buffer.alloc(region.size / 4096 / 8)],
      saveState: () => {
        calls.push('saveState');
        return state;
      },
    },
  };
  return { vm, calls };
}

describe('migration of a VMM other than the bare-metal one (the Linux mode)', () => {
  it('the stream carries its kind; the destination opens that kind, gets RAM (not the lost frame), the manifest and the exact state, then starts it', async () => {
    const src = openEngine();
    const spec: VmmRegionSpec = { name: 'low', pageSize: '2M', size: 4 * MiB, guestPhysAddr: GPA };
    const a = src.mapRegion({ name: 'low', path: hugeFile('lxmig-src'), size: spec.size, guestPhysAddr: GPA });
    const data = seededBytes(31, a.size);
    a.write(0, data);
    const lostOff = MiB + 7 * SUB;
    src.injectPoison(a, lostOff, { mode: 'simulate' });
    await src.whenIdle({ timeoutMs: 10_000 });
    const state = { vcpus: [Buffer.from('cpu0 regs lapic'), Buffer.from('cpu1 regs lapic')], vm: Buffer.from('clock pic ioapic pit serial') };
    const { vm, calls } = sourceVm(src, a, spec, state);
    const pipe = new PassThrough();
    const dst = openEngine();
    const seen: { kind: string; vcpus: number; regions: VmmRegionSpec[] }[] = [];
    const order: string[] = [];
    let restored: { vcpus: Buffer[]; vm: Buffer } | null = null;
    const regions = new Map<string, Region>();
    const open = (c: { kind: string; vcpus: number; regions: VmmRegionSpec[] }): RestorableVm & { order: string[] } => {
      seen.push(c);
      for (const r of c.regions) regions.set(r.name, dst.mapRegion({ name: r.name, path: hugeFile('lxmig-dst'), size: r.size, guestPhysAddr: r.guestPhysAddr }));
      regions.get('low')!.write(0, Buffer.alloc(spec.size, 0xaa));
      return {
        engine: dst,
        regions,
        order,
        machine: {
          restoreState: (s) => {
            order.push('restoreState');
            restored = { vcpus: s.vcpus.map((b) => Buffer.from(b)), vm: Buffer.from(s.vm) };
            return { msrFailed: [] };
          },
        },
        start: () => order.push('start'),
        close: () => order.push('close'),
      };
    };
    const [out, inn] = await Promise.all([migrateOut(vm, pipe), migrateIn(pipe, {}, open)]);
    expect(calls).toEqual(['dirtyLog true', 'pause', 'dirtyLog false', 'saveState']);
    expect(seen).toEqual([{ kind: 'linux', vcpus: 2, regions: [spec] }]);
    expect(order).toEqual(['restoreState', 'start']);
    expect(restored).toEqual(state);
    expect(out.manifest.regions[0].lost.length).toBe(1);
    expect(dst.lostPages().map((l) => [l.guestPhysAddr, l.cause])).toEqual([[GPA + BigInt(lostOff), 'imported']]);
    expect(inn.imports.map((i) => i.imported)).toEqual([1, 0]);
    // Every healthy byte arrived; the lost frame was never written (and reads as lost here).
    const b = regions.get('low')!;
    const got = b.readAvailable(0, b.size);
    expect(got.lostOffsets).toEqual([lostOff]);
    for (let off = 0; off < b.size; off += SUB) {
      if (off === lostOff) continue;
      if (!got.data.subarray(off, off + SUB).equals(data.subarray(off, off + SUB))) throw new Error(`frame at ${off} differs`);
    }
  });

  it('a bare-metal destination refuses a Linux VM\'s stream before it opens anything', async () => {
    const src = openEngine();
    const spec: VmmRegionSpec = { name: 'low', pageSize: '2M', size: 2 * MiB, guestPhysAddr: GPA };
    const a = src.mapRegion({ name: 'low', path: hugeFile('lxmig-src2'), size: spec.size, guestPhysAddr: GPA });
    const { vm } = sourceVm(src, a, spec, { vcpus: [Buffer.from('x')], vm: Buffer.from('y') });
    const p1 = new PassThrough();
    const r1 = migrateIn(p1);
    const o1 = migrateOut(vm, p1).catch(() => undefined);
    await expect(r1).rejects.toThrow(StreamError);
    await expect(r1).rejects.toThrow(/a linux VM's stream: this destination opens bare-metal VMs/);
    p1.destroy();
    await o1;
  });

  // L3 run 2 of the last stop: the source guest triple-faulted during pre-copy, the source migrated
  // it anyway and the destination ran a vCPU from the reset state. A guest that stopped by itself
  // is not handed over: the source refuses before the vCPU state, the destination gets no END.
  for (const [at, when] of [['dirtyLog true', 'during pre-copy round 1'], ['pause', 'before the pause']] as const) {
    it(`a guest that stopped by itself (${when}) is not migrated: no state, no END, the destination refuses`, async () => {
      const src = openEngine();
      const spec: VmmRegionSpec = { name: 'low', pageSize: '2M', size: 2 * MiB, guestPhysAddr: GPA };
      const a = src.mapRegion({ name: 'low', path: hugeFile('lxmig-src3'), size: spec.size, guestPhysAddr: GPA });
      const { vm, calls } = sourceVm(src, a, spec, { vcpus: [Buffer.from('x')], vm: Buffer.from('y') }, at);
      const pipe = new PassThrough();
      const dst = openEngine();
      const started: string[] = [];
      const inn = migrateIn(pipe, {}, (c: { regions: VmmRegionSpec[] }) => {
        const regions = new Map<string, Region>();
        for (const r of c.regions) regions.set(r.name, dst.mapRegion({ name: r.name, path: hugeFile('lxmig-dst3'), size: r.size, guestPhysAddr: r.guestPhysAddr }));
        return { engine: dst, regions, machine: { restoreState: () => ({ msrFailed: [] }) }, start: () => started.push('start'), close: () => started.push('close') };
      });
      const out = migrateOut(vm, pipe);
      await expect(out).rejects.toThrow(new RegExp(`the guest stopped by itself ${when} \\(triple-fault: .*\\): nothing to hand over`));
      expect(calls).not.toContain('saveState');
      pipe.end();
      await expect(inn).rejects.toThrow(StreamError);
      expect(started).not.toContain('start');
    });
  }
});
