// The reference VMM (vmm/) on this machine's KVM with simulated poison: the lost 4 KiB reaches the
// vCPU as an MMIO exit or an EFAULT (no signal), i.e. the C API path (check_gpa / next_lost).
// The VMM runs in a child process: a vCPU or engine failure must not take the test runner down.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { DIR_1G, DIR_2M, has1G, MiB } from './helpers';

const ROOT = path.resolve(__dirname, '..');
const MAIN = path.join(ROOT, 'dist/vmm/src/scenario-main.js');
const KB64 = 64 * 1024;

function kvmUsable(): boolean {
  try {
    fs.accessSync('/dev/kvm', fs.constants.R_OK | fs.constants.W_OK);
    return true;
  } catch {
    return false;
  }
}

interface Result {
  ok: boolean;
  failures: string[];
  targets: { guestPhysAddr: string }[];
  mcePerFrame: Record<string, number>;
  unexpectedMces: string[];
  passesBefore: number[];
  passesAfter: number[];
  wrongBytes: number;
  efault: number;
  mmioInRam: number;
  states: string[];
  errors: string[];
  guard: string;
  report: {
    apiUsed: boolean;
    info: { vendor: string; cpuid1Edx: number };
    guestMces: { gpa: string; status: string; mcgStatus: string; misc: string; bank: number; skipped: boolean }[];
    injections: { gpa: string; path: string }[];
    vcpus: { lost: number; injected: number; deferred: number; mmioInRam: number; efault: number; healthy: number; notRam: number }[];
    sigbus: { otherThread: number; nullUcontext: number };
    hello: { banks: number; cr4: string }[];
  };
}

// The guest verifies only small windows (the host's KVM here emulates the guest's instructions,
// slowly); each window holds poisoned and healthy frames of the same huge page.
function run(opts: object): Result {
  const r = spawnSync(process.execPath, [MAIN, JSON.stringify(opts)], { encoding: 'utf8', timeout: 240_000, maxBuffer: 64 << 20 });
  const line = (r.stdout ?? '').split('\n').find((l) => l.startsWith('RESULT '));
  if (!line) throw new Error(`the VMM process died (status ${r.status}, signal ${r.signal}):\n${r.stderr}\n${r.stdout}`);
  return JSON.parse(line.slice(7)) as Result;
}

function checkRun(res: Result, vcpus: number): void {
  expect(res.failures, JSON.stringify(res.failures)).toEqual([]);
  expect(res.report.apiUsed).toBe(true);
  // The guest's CPUID shows MCE and MCA; it enabled CR4.MCE and sees 10 banks.
  expect(res.report.info.cpuid1Edx & (1 << 7)).not.toBe(0);
  expect(res.report.info.cpuid1Edx & (1 << 14)).not.toBe(0);
  expect(res.report.hello).toHaveLength(vcpus);
  for (const h of res.report.hello) {
    expect(h.banks).toBe(10);
    expect(BigInt(h.cr4) & 0x40n).toBe(0x40n);
  }
  // Every vCPU resumed verifying after the poison and stopped cleanly on request.
  expect(res.states).toEqual(Array(vcpus).fill('bye'));
  res.passesAfter.forEach((p, i) => expect(p).toBeGreaterThan(res.passesBefore[i]));
  // Exactly one machine check per lost frame, at its GPA; none for a healthy frame.
  const want = Object.fromEntries(res.targets.map((t) => [t.guestPhysAddr, 1]));
  expect(res.mcePerFrame).toEqual(want);
  expect(res.unexpectedMces).toEqual([]);
  const amd = res.report.info.vendor === 'AuthenticAMD';
  for (const m of res.report.guestMces) {
    expect(m.bank).toBe(9);
    expect(m.skipped).toBe(true); // it interrupted the verifier, which skipped the frame
    const st = BigInt(m.status);
    const bits = (1n << 63n) | (1n << 61n) | (1n << 60n) | (1n << 59n) | (1n << 58n); // VAL UC EN MISCV ADDRV
    expect(st & bits).toBe(bits);
    if (amd) expect(st & (1n << 43n)).toBe(1n << 43n); // POISON
    else expect(st & ((1n << 56n) | (1n << 55n) | 0xffffn)).toBe((1n << 56n) | (1n << 55n) | 0x134n); // S AR MCACOD
    expect(BigInt(m.mcgStatus) & 7n).toBe(7n); // RIPV EIPV MCIP (as injected)
    expect(BigInt(m.misc)).toBe((2n << 6n) | 12n);
  }
  // No guest access was answered with made-up data: the guest's own verification is clean.
  expect(res.wrongBytes).toBe(0);
  // Here the poison arrives as MMIO exits inside RAM (or EFAULT); every one that hit a lost frame
  // became a machine check (one injection per lost frame), the others were completed from RAM.
  expect(res.mmioInRam + res.efault).toBeGreaterThan(0);
  const lostAnswers = res.report.vcpus.reduce((a, c) => a + c.lost, 0);
  const injected = res.report.vcpus.reduce((a, c) => a + c.injected, 0);
  expect(injected).toBe(res.targets.length);
  expect(lostAnswers).toBe(res.targets.length);
  expect(res.report.vcpus.reduce((a, c) => a + c.deferred + c.notRam, 0)).toBe(0);
  expect(res.report.injections.map((i) => i.gpa).sort()).toEqual(res.targets.map((t) => t.guestPhysAddr).sort());
  // The VMM's own SIGBUS handler got nothing it should not have, and never a null ucontext.
  expect(res.report.sigbus.otherThread).toBe(0);
  expect(res.report.sigbus.nullUcontext).toBe(0);
}

describe.skipIf(!kvmUsable())('reference VMM on KVM (simulated poison: the C API path)', () => {
  it('2 MiB regions, 2 vCPUs: two lost frames in one huge page and one in another region', () => {
    const res = run({
      vcpus: 2,
      mode: 'simulate',
      engine: { reserveBytes: 0 },
      dir2M: DIR_2M,
      regions: [
        { name: 'low', pageSize: '2M', size: 4 * MiB, guestPhysAddr: '0x0n', verify: [{ offset: 2 * MiB, size: KB64 }] },
        { name: 'ram2m', pageSize: '2M', size: 8 * MiB, guestPhysAddr: '0x1000000n', verify: [{ offset: 0, size: KB64 }, { offset: 4 * MiB, size: KB64 }] },
      ],
      targets: [
        { region: 'low', offset: 2 * MiB + 0x5000 },
        { region: 'ram2m', offset: 4 * MiB + 0x7000 },
        { region: 'ram2m', offset: 4 * MiB + 0xc000 }, // the same huge page, already split
      ],
    });
    checkRun(res, 2);
  }, 300_000);

  it.skipIf(!has1G())('a 1 GiB page and 2 MiB pages, 4 vCPUs', () => {
    const res = run({
      vcpus: 4,
      mode: 'simulate',
      engine: { reserveBytes: 0 },
      dir2M: DIR_2M,
      dir1G: DIR_1G,
      regions: [
        { name: 'low', pageSize: '2M', size: 4 * MiB, guestPhysAddr: '0x0n', verify: [{ offset: 2 * MiB, size: KB64 }] },
        { name: 'ram1g', pageSize: '1G', size: 1 << 30, guestPhysAddr: '0x40000000n', verify: [{ offset: 0, size: KB64 }, { offset: 0x2340000, size: KB64 }] },
      ],
      targets: [
        { region: 'ram1g', offset: 0x2345000 },
        { region: 'low', offset: 2 * MiB + 0x9000 },
      ],
    });
    checkRun(res, 4);
  }, 300_000);
});
