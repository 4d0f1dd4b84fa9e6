// The reference VMM's machine-check delivery (vmm/native/mce.cc, mce_delivery.cc) on the host,
// without /dev/kvm: the code every vCPU thread runs, against a model of KVM's KVM_X86_SET_MCE
// (kvm_vcpu_ioctl_x86_set_mce, 6.12), with the MSR values QEMU's kvm_mce_inject and
// cpu_x86_inject_mce (target/i386/kvm/kvm.c, target/i386/helper.c) would leave in each vCPU.
// This lab's CPU is AMD: the Intel paths (broadcast, LMCE) are proven here only.
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';

// eslint-disable-next-line @typescript-eslint/no-require-imports
const vmm = require(path.resolve(__dirname, '..', 'build', 'Release', 'ras_vmm.node'));
const t = vmm.testing;

// QEMU's constants (target/i386/cpu.h).
const VAL = 1n << 63n, OVER = 1n << 62n, UC = 1n << 61n, EN = 1n << 60n, MISCV = 1n << 59n, ADDRV = 1n << 58n;
const S = 1n << 56n, AR = 1n << 55n, DEFERRED = 1n << 44n, POISON = 1n << 43n;
const RIPV = 1n, EIPV = 2n, MCIP = 4n, LMCES = 8n;
const CTL_P = 1n << 8n, SER_P = 1n << 24n, LMCE_P = 1n << 27n;
const MISC = (2n << 6n) | 0xcn; // (MCM_ADDR_PHYS << 6) | 0xc
const INTEL = { amd: false, broadcast: true }; // family 6 model >= 14: cpu_x86_support_mca_broadcast
const AMD = { amd: true, broadcast: false };
const CAP = CTL_P | SER_P | 10n;
const GPA = 0x1234_5000n;

// kvm_mce_inject's bits.
const QEMU = {
  intelAr: { status: VAL | EN | ADDRV | MISCV | S | UC | AR | 0x134n, mcg: MCIP | RIPV | EIPV },
  intelAo: { status: VAL | EN | ADDRV | MISCV | S | UC | 0xc0n, mcg: MCIP | RIPV },
  amdAr: { status: VAL | EN | ADDRV | MISCV | UC | POISON, mcg: MCIP | RIPV | EIPV },
  amdAo: { status: VAL | EN | ADDRV | MISCV | DEFERRED | POISON, mcg: MCIP | RIPV },
  // cpu_x86_inject_mce, MCE_INJECT_BROADCAST: every other CPU, bank 1.
  piece: { status: VAL | UC, mcg: MCIP | RIPV },
};

type Bank = { status: bigint; addr: bigint; misc: bigint };
type Cpu = { mcgStatus: bigint; tripleFault: boolean; mcQueued: number; deferred: number; banks: Bank[] };
type Sim = { vcpus: Cpu[]; outcomes: { vcpu: number; verdict: string; piece: boolean; ar: boolean; bank: number }[]; kicks: number[] };
const sim = (o: object): Sim => t.simulateDelivery(o);

describe('reference VMM: machine checks as QEMU injects them, per vCPU (host, KVM modelled)', () => {
  it('Intel, LMCE off: AR on the vCPU that touched the frame, QEMU\'s broadcast piece on every other', () => {
    const r = sim({ model: INTEL, mcgCap: CAP, vcpus: 4, steps: [{ deliver: 2, gpa: GPA, ar: true }, { beforeRun: 0 }, { beforeRun: 1 }, { beforeRun: 3 }] });
    expect(r.vcpus[2].banks[9]).toEqual({ status: QEMU.intelAr.status, addr: GPA, misc: MISC });
    expect(r.vcpus[2].mcgStatus).toBe(QEMU.intelAr.mcg);
    for (const k of [0, 1, 3]) {
      expect(r.vcpus[k].banks[1]).toEqual({ status: QEMU.piece.status, addr: 0n, misc: 0n });
      expect(r.vcpus[k].mcgStatus).toBe(QEMU.piece.mcg);
      expect(r.vcpus[k].banks[9].status).toBe(0n);
    }
    expect(r.vcpus.map((c) => c.mcQueued)).toEqual([1, 1, 1, 1]); // every CPU enters mce_start()
    expect(r.vcpus.some((c) => c.tripleFault)).toBe(false);
    expect([...r.kicks].sort()).toEqual([0, 1, 3]);
  });

  it('Intel AO (next_lost): QEMU\'s SRAO bits, broadcast too', () => {
    const r = sim({ model: INTEL, mcgCap: CAP, vcpus: 2, steps: [{ deliver: 0, gpa: GPA, ar: false }, { beforeRun: 1 }] });
    expect(r.vcpus[0].banks[9]).toEqual({ status: QEMU.intelAo.status, addr: GPA, misc: MISC });
    expect(r.vcpus[0].mcgStatus).toBe(QEMU.intelAo.mcg);
    expect(r.vcpus[1].banks[1].status).toBe(QEMU.piece.status);
  });

  it('Intel, the guest enabled LMCE (MCG_EXT_CTL.LMCE_EN): MCG_STATUS.LMCES, no broadcast', () => {
    const cap = CAP | LMCE_P;
    const r = sim({ model: INTEL, mcgCap: cap, vcpus: 4, msrs: [{}, { extCtl: 1n }, {}, {}], steps: [{ deliver: 1, gpa: GPA, ar: true }, { beforeRun: 0 }, { beforeRun: 2 }, { beforeRun: 3 }] });
    expect(r.vcpus[1].banks[9]).toEqual({ status: QEMU.intelAr.status, addr: GPA, misc: MISC });
    expect(r.vcpus[1].mcgStatus).toBe(QEMU.intelAr.mcg | LMCES);
    for (const k of [0, 2, 3]) {
      expect(r.vcpus[k].mcgStatus).toBe(0n);
      expect(r.vcpus[k].banks.every((b) => b.status === 0n)).toBe(true);
    }
    expect(r.kicks).toEqual([]);
  });

  it('AMD: QEMU\'s bits in bank 9, no broadcast, no LMCE (unchanged)', () => {
    const ar = sim({ model: AMD, mcgCap: CAP, vcpus: 4, steps: [{ deliver: 3, gpa: GPA, ar: true }, { beforeRun: 0 }, { beforeRun: 1 }] });
    expect(ar.vcpus[3].banks[9]).toEqual({ status: QEMU.amdAr.status, addr: GPA, misc: MISC });
    expect(ar.vcpus[3].mcgStatus).toBe(QEMU.amdAr.mcg);
    expect(ar.vcpus[0].banks[1].status).toBe(0n);
    expect(ar.kicks).toEqual([]);
    const ao = sim({ model: AMD, mcgCap: CAP, vcpus: 1, steps: [{ deliver: 0, gpa: GPA, ar: false }] });
    expect(ao.vcpus[0].banks[9]).toEqual({ status: QEMU.amdAo.status, addr: GPA, misc: MISC });
    expect(ao.vcpus[0].mcQueued).toBe(0); // no UC: KVM fills the bank, the guest polls it
  });

  it('a broadcast piece for a vCPU already in a machine check is merged, never a triple fault', () => {
    // vCPUs 0 and 1 each touched a lost frame at once: both AR, each other's piece arrives under MCIP.
    const r = sim({ model: INTEL, mcgCap: CAP, vcpus: 3, steps: [
      { deliver: 0, gpa: GPA, ar: true }, { deliver: 1, gpa: GPA + 0x1000n, ar: true },
      { beforeRun: 0 }, { beforeRun: 1 }, { beforeRun: 2 }] });
    expect(r.vcpus.some((c) => c.tripleFault)).toBe(false);
    expect(r.vcpus[0].banks[9].addr).toBe(GPA);
    expect(r.vcpus[1].banks[9].addr).toBe(GPA + 0x1000n);
    expect(r.vcpus[2].mcQueued).toBe(1); // one rendezvous for both errors
    expect(r.outcomes.filter((o) => o.piece).map((o) => o.verdict).sort()).toEqual(['inject', 'merged', 'merged', 'merged']);
  });
});

describe('reference VMM: AR vs AO, MCIP, banks (issue 21 items 2, 5, 8)', () => {
  it('AR while the guest is still in its #MC handler (MCIP): a shutdown as hardware, never a queue that grows', () => {
    // The guest's handler touches a second lost frame before clearing MCIP, and re-faults on it:
    // each re-fault is another AR for it. Before: each one was pushed on the pending vector.
    const steps = [{ deliver: 0, gpa: GPA, ar: true }];
    for (let k = 0; k < 50; k++) steps.push({ deliver: 0, gpa: GPA + 0x1000n, ar: true });
    const r = sim({ model: AMD, mcgCap: CAP, vcpus: 1, steps });
    expect(r.outcomes[1].verdict).toBe('shutdown');
    expect(r.vcpus[0].tripleFault).toBe(true);
    expect(r.vcpus[0].deferred).toBe(0);
    expect(r.outcomes.filter((o) => o.verdict === 'defer')).toEqual([]);
  });

  it('two vCPUs touching one lost frame: each access gets its own AR (no "already injected" silence)', () => {
    const r = sim({ model: AMD, mcgCap: CAP, vcpus: 2, steps: [{ deliver: 0, gpa: GPA, ar: true }, { deliver: 1, gpa: GPA, ar: true }] });
    for (const k of [0, 1]) {
      expect(r.vcpus[k].banks[9]).toEqual({ status: QEMU.amdAr.status, addr: GPA, misc: MISC });
      expect(r.vcpus[k].mcQueued).toBe(1);
    }
    // A frame no access named (next_lost): AO, and only the first vCPU to drain it tells the VM.
    const ao = sim({ model: AMD, mcgCap: CAP, vcpus: 2, steps: [{ firstAo: 0, gpa: GPA }, { firstAo: 1, gpa: GPA }] });
    expect(ao.outcomes.map((o) => [o.vcpu, o.ar, o.verdict])).toEqual([[0, false, 'inject']]);
    expect(ao.vcpus[0].banks[9]).toEqual({ status: QEMU.amdAo.status, addr: GPA, misc: MISC });
    expect(ao.vcpus[1].banks[9].status).toBe(0n);
  });

  it('AO waits while MCIP is set, once per frame, and is injected when the guest is done', () => {
    const steps: object[] = [{ deliver: 0, gpa: GPA, ar: true }];
    for (let k = 0; k < 5; k++) steps.push({ deliver: 0, gpa: GPA + 0x2000n, ar: false }, { beforeRun: 0 });
    const mid = sim({ model: AMD, mcgCap: CAP, vcpus: 1, steps });
    expect(mid.vcpus[0].deferred).toBe(1);
    expect(mid.outcomes.filter((o) => o.verdict === 'defer').length).toBe(1);
    const done = sim({ model: AMD, mcgCap: CAP, vcpus: 1, steps: [...steps, { guestDone: 0 }, { beforeRun: 0 }, { beforeRun: 0 }] });
    expect(done.vcpus[0].deferred).toBe(0);
    expect(done.vcpus[0].banks[9]).toEqual({ status: QEMU.amdAo.status, addr: GPA + 0x2000n, misc: MISC });
    expect(done.outcomes.filter((o) => o.verdict === 'inject' && !o.ar).length).toBe(1);
  });

  it('bank 9 still holds an error the guest has not read: another free bank, never OVER', () => {
    const full = { status: { 9: QEMU.amdAo.status } };
    const r = sim({ model: INTEL, mcgCap: CAP, vcpus: 1, msrs: [full], steps: [{ deliver: 0, gpa: GPA, ar: true }] });
    expect(r.vcpus[0].banks[9].status).toBe(QEMU.amdAo.status); // untouched
    expect(r.vcpus[0].banks[8]).toEqual({ status: QEMU.intelAr.status, addr: GPA, misc: MISC });
    expect((r.vcpus[0].banks[8].status & OVER) === 0n).toBe(true);
    // An AO waits for the bank instead.
    const ao = t.planMce(INTEL, CAP, { status: Object.fromEntries([2, 3, 4, 5, 6, 7, 8, 9].map((b) => [b, VAL])) }, false, GPA);
    expect(ao.verdict).toBe('defer');
  });

  it('a machine check KVM would drop (MCG_CTL or MCi_CTL not all ones) is not counted as injected', () => {
    expect(t.planMce(AMD, CAP, { mcgCtl: 0n }, true, GPA).verdict).toBe('disabled');
    const r = sim({ model: AMD, mcgCap: CAP, vcpus: 1, msrs: [{ ctl: Object.fromEntries([2, 3, 4, 5, 6, 7, 8, 9].map((b) => [b, 0n])) }], steps: [{ deliver: 0, gpa: GPA, ar: true }] });
    expect(r.outcomes.map((o) => o.verdict)).toEqual(['disabled']);
    expect(r.vcpus[0].mcQueued).toBe(0);
  });

  it('MSRs unreadable: AR as QEMU injects it, AO waits (fails closed)', () => {
    expect(t.planMce(AMD, CAP, { ok: false }, true, GPA).verdict).toBe('inject');
    expect(t.planMce(AMD, CAP, { ok: false }, false, GPA).verdict).toBe('defer');
  });
});

describe('reference VMM: the vCPU thread\'s bounds (issue 21 items 6, 7)', () => {
  it('stop() during a long recovery: the engine question returns within a slice of the stop', () => {
    const r = t.askEngine({ waitMs: 100_000, quitAfterMs: 300, engine: 'slow' });
    expect(r.rc).toBe(-125); // -ECANCELED
    expect(r.ms).toBeLessThan(1500);
  });

  it('still recovering after waitMs: -ETIMEDOUT, not an answer', () => {
    const r = t.askEngine({ waitMs: 500, quitAfterMs: -1, engine: 'slow' });
    expect(r.rc).toBe(-110);
    expect(r.ms).toBeGreaterThanOrEqual(450);
    expect(r.ms).toBeLessThan(3000);
  });

  it('a transient -EAGAIN from the engine is asked again, not fatal', () => {
    const r = t.askEngine({ waitMs: 5000, quitAfterMs: -1, engine: 'eagain' });
    expect(r.rc).toBe(0);
    expect(r.state).toBe(3); // HUGETLB_RAS_LOST
    expect(r.gpa).toBe(0x5000n);
  });

  it('a kick between clearing immediate_exit and looking at quit is never lost', () => {
    const r = t.gateWithKick();
    // Either the loop does not enter KVM_RUN, or KVM_RUN returns at once.
    expect(r.entered === false || r.immediateExit === 1).toBe(true);
  });
});

describe('reference VMM, Linux mode: the MP table an SMP guest finds its CPUs in (acpi=off)', () => {
  const sum = (b: Buffer) => b.reduce((a, x) => (a + x) & 0xff, 0);
  it('4 vCPUs: floating pointer and config table with valid checksums, APIC ids 0..3, vCPU 0 the BSP, the IOAPIC', () => {
    const b: Buffer = t.mpTable(4);
    expect(b.subarray(0, 4).toString()).toBe('_MP_');
    expect(sum(b.subarray(0, 16))).toBe(0);
    expect(b.readUInt32LE(4)).toBe(0x9fc00 + 16); // the config table right after, in the reserved KiB
    const h = b.subarray(16);
    expect(h.subarray(0, 4).toString()).toBe('PCMP');
    const len = h.readUInt16LE(4);
    expect(16 + len).toBe(b.length);
    expect(b.length).toBeLessThanOrEqual(0x400);
    expect(sum(h.subarray(0, len))).toBe(0);
    expect(h.readUInt32LE(36)).toBe(0xfee00000);
    const cpus: { id: number; flags: number }[] = [];
    let ioapic = -1;
    let count = 0;
    for (let o = 44; o < len; count++) {
      const type = h[o];
      if (type === 0) {
        cpus.push({ id: h[o + 1], flags: h[o + 3] });
        o += 20;
      } else {
        if (type === 2) ioapic = h[o + 1];
        o += 8;
      }
    }
    expect(count).toBe(h.readUInt16LE(34));
    expect(cpus).toEqual([{ id: 0, flags: 3 }, { id: 1, flags: 1 }, { id: 2, flags: 1 }, { id: 3, flags: 1 }]);
    expect(ioapic).toBe(4);
    expect(t.mpTable(64).length).toBe(0); // does not fit in the KiB: refused, not truncated
  });
});
