// The benchmark's KVM rows (issue 9): a real KVM vCPU of the reference VMM (vmm/) finds poisoned
// guest RAM with its own access, and the stall is timed by the VMM from the exit that found the
// poison to KVM_RUN re-entered. Each rep is its own VMM process (its SIGBUS handler must come
// before the engine's); the memcpy limit of the same 2 MiB is measured in this process between reps.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { benchNative } from '../src/native';

export interface KvmStallResult {
  stallNs: number[];
  limitNs: number[];
  exits: { mmio: number; sigbus: number; efault: number };
  skipped?: string;
}

const MiB = 1 << 20;

export function benchKvmStall(reps: number, dir: string): KvmStallResult {
  const out: KvmStallResult = { stallNs: [], limitNs: [], exits: { mmio: 0, sigbus: 0, efault: 0 } };
  const main = path.resolve(__dirname, '../vmm/src/scenario-main.js');
  try {
    fs.accessSync('/dev/kvm', fs.constants.R_OK | fs.constants.W_OK);
  } catch {
    return { ...out, skipped: 'no /dev/kvm (read/write) here' };
  }
  const scenario = {
    vcpus: 2,
    mode: 'simulate',
    signal: false,
    regions: [
      { name: 'low', pageSize: '2M', size: 4 * MiB, guestPhysAddr: '0x0n', verify: [{ offset: 2 * MiB, size: 64 * 1024 }] },
      { name: 'ram2m', pageSize: '2M', size: 8 * MiB, guestPhysAddr: '0x1000000n', verify: [{ offset: 4 * MiB, size: 64 * 1024 }] },
    ],
    targets: [{ region: 'ram2m', offset: 4 * MiB + 0x7000 }],
    dir2M: path.join(dir, '2M'),
    dir1G: path.join(dir, '1G'),
  };
  for (let rep = 0; rep < reps; rep++) {
    out.limitNs.push(benchNative().memcpyLimit(2 * MiB));
    const r = spawnSync(process.execPath, [main, JSON.stringify(scenario)], { encoding: 'utf8', timeout: 120_000 });
    const line = (r.stdout ?? '').split('\n').find((l) => l.startsWith('RESULT '));
    if (!line) return { ...out, skipped: `the reference VMM did not report (status ${r.status}): ${(r.stderr ?? '').slice(-300)}` };
    const res = JSON.parse(line.slice(7)) as {
      ok: boolean;
      failures: string[];
      mmioInRam: number;
      eintrSigbus: number;
      efault: number;
      report: { stalls: { ns: string }[] };
    };
    if (!res.ok) return { ...out, skipped: `the reference VMM's run failed: ${res.failures.join('; ')}` };
    out.exits.mmio += res.mmioInRam;
    out.exits.sigbus += res.eintrSigbus;
    out.exits.efault += res.efault;
    // The vCPU that found the poison waited for the recovery; a later exit of the other vCPU on the
    // same huge page may wait too: each is one stall.
    for (const s of res.report.stalls) out.stallNs.push(Number(BigInt(s.ns.replace(/n$/, ''))));
  }
  return out;
}
