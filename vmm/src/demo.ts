#!/usr/bin/env node
// The KVM demo: the reference VMM runs its guest on this machine's KVM, memory is poisoned while
// the guest verifies it, and this prints what the guest saw. `npm run demo:kvm`, or the package's
// bin `hugetlb-ras-kvm-demo [--vcpus N]` (the engine's CLI does not load the VMM). Call it in a process that has not opened a RasEngine yet (the VMM's SIGBUS
// handler must come first, as in QEMU).
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { InjectMode } from '../../src/index';
import type { MemLock } from './memlock';
import { runScenario, type PoisonTarget } from './scenario';
import { kvmAvailable, MiB, type VmmRegionSpec } from './vmm';

export interface KvmDemoOptions {
  vcpus?: number;
  /** 'auto': real MADV_HWPOISON where permitted (root, CONFIG_MEMORY_FAILURE), else simulated. */
  mode?: InjectMode;
  /** Include a 1 GiB-page region (default: where a 1 GiB page is free). */
  with1G?: boolean;
  dir?: string;
  /** Lock the guest RAM as QEMU's -overcommit mem-lock=on|on-fault (mlock / mlock2(MLOCK_ONFAULT)). */
  memLock?: MemLock;
  print?: (line: string) => void;
}

export interface KvmDemoResult {
  ran: boolean;
  reason?: string;
  ok?: boolean;
  machineChecks?: { gpa: string; vcpu: number; path: string; status: string }[];
  framesVerified?: number;
  wrongBytes?: number;
  stalls?: number;
  failures?: string[];
}

const hex = (v: bigint) => '0x' + v.toString(16);

function free1G(): boolean {
  try {
    return Number(fs.readFileSync('/sys/kernel/mm/hugepages/hugepages-1048576kB/free_hugepages', 'utf8')) > 0;
  } catch {
    return false;
  }
}

function decodeStatus(s: bigint): string {
  const names: [number, string][] = [[63, 'VAL'], [62, 'OVER'], [61, 'UC'], [60, 'EN'], [59, 'MISCV'], [58, 'ADDRV'], [57, 'PCC'], [56, 'S'], [55, 'AR'], [44, 'DEFERRED'], [43, 'POISON']];
  const bits = names.filter(([b]) => (s >> BigInt(b)) & 1n).map(([, n]) => n);
  const mcacod = s & 0xffffn;
  return bits.join('|') + (mcacod ? ` MCACOD ${hex(mcacod)}` : '');
}

export async function runKvmDemo(opts: KvmDemoOptions = {}): Promise<KvmDemoResult> {
  const print = opts.print ?? ((l: string) => console.log(l));
  const kvm = kvmAvailable();
  if (!kvm.ok) {
    print(`KVM demo: not run: ${kvm.reason}. It needs /dev/kvm (read/write) and hugetlbfs (npm run setup:hugetlbfs).`);
    return { ran: false, reason: kvm.reason };
  }
  const dir = opts.dir ?? process.env.HUGETLB_RAS_DIR ?? '/mnt/hugetlb-ras';
  const with1G = opts.with1G ?? free1G();
  const W = 64 * 1024; // the guest verifies small windows: some KVMs (nested, emulating) are slow
  const regions: VmmRegionSpec[] = [
    { name: 'low', pageSize: '2M', size: 4 * MiB, guestPhysAddr: 0n, verify: [{ offset: 2 * MiB, size: W }] },
    { name: 'ram2m', pageSize: '2M', size: 8 * MiB, guestPhysAddr: 0x1000000n, verify: [{ offset: 0, size: W }, { offset: 4 * MiB, size: W }] },
  ];
  const targets: PoisonTarget[] = [
    { region: 'low', offset: 2 * MiB + 0x5000 },
    { region: 'ram2m', offset: 4 * MiB + 0x7000 },
  ];
  if (with1G) {
    regions.push({ name: 'ram1g', pageSize: '1G', size: 1 << 30, guestPhysAddr: 0x40000000n, verify: [{ offset: 0x2340000, size: W }] });
    targets.push({ region: 'ram1g', offset: 0x2345000 });
  }
  const vcpus = opts.vcpus ?? 2;
  print(`KVM demo: reference VMM, ${vcpus} vCPUs, guest RAM: ${regions.map((r) => `${r.name} (${r.size / MiB} MiB of ${r.pageSize} pages at GPA ${hex(r.guestPhysAddr)})`).join(', ')}`);
  const res = await runScenario({
    vcpus,
    regions,
    targets,
    mode: opts.mode ?? 'auto',
    memLock: opts.memLock,
    engine: { reserveBytes: 0 },
    dir2M: path.join(dir, '2M'),
    dir1G: path.join(dir, '1G'),
    log: (m) => print(`  ${m}`),
  });
  const r = res.report;
  print(`  engine guard for lost frames: ${res.guard}${res.guard === 'guard' ? ' (KVM cannot honour it: KVM_RUN fails with EFAULT and this VMM asks the engine through the C API)' : ''}`);
  print(`  the guest saw ${r.guestMces.length} machine check(s):`);
  for (const m of r.guestMces) {
    const inj = r.injections.find((i) => i.gpa === m.gpa);
    print(`    vCPU ${m.cpu}: #MC bank ${m.bank}, MCi_ADDR ${hex(m.addr)} -> lost frame GPA ${hex(m.gpa)}, MCi_STATUS ${decodeStatus(m.status)}, MCi_MISC ${hex(m.misc)}; the VMM learnt of it by ${inj ? inj.path : '?'}`);
  }
  const verified = r.vcpus.reduce((a, c) => a + c.verified, 0);
  print(`  pages verified by the guest: ${verified} (4 KiB each, ${r.vcpus.map((c) => c.passes).join('/')} passes per vCPU), wrong bytes: ${res.wrongBytes}`);
  print(`  exits: ${res.eintrSigbus} SIGBUS (KVM_RUN EINTR), ${res.mmioInRam} MMIO inside RAM, ${res.efault} EFAULT; every one for a lost frame became a machine check`);
  if (r.stalls.length) {
    const ns = r.stalls.map((s) => Number(s.ns)).sort((a, b) => a - b);
    print(`  vCPU stalls on a huge page being recovered: ${r.stalls.length} (median ${(ns[ns.length >> 1] / 1e6).toFixed(2)} ms, longest ${(ns[ns.length - 1] / 1e6).toFixed(2)} ms)`);
  } else {
    print('  vCPU stalls: none seen by the VMM (the engine stalls a vCPU inside its SIGBUS handler; KVM_RUN then returns EINTR)');
  }
  print(res.ok ? '  result: every lost 4 KiB became exactly one machine check; no healthy frame lost; no wrong byte' : `  result: FAILED: ${res.failures.join('; ')}`);
  return {
    ran: true,
    ok: res.ok,
    machineChecks: r.guestMces.map((m) => ({ gpa: hex(m.gpa), vcpu: m.cpu, path: r.injections.find((i) => i.gpa === m.gpa)?.path ?? '?', status: decodeStatus(m.status) })),
    framesVerified: verified,
    wrongBytes: res.wrongBytes,
    stalls: r.stalls.length,
    failures: res.failures,
  };
}

if (require.main === module && process.argv.includes('--migrate')) {
  // `hugetlb-ras-kvm-demo --migrate [--mode simulate|madvise]`: two VMM processes, a live migration.
  const mi = process.argv.indexOf('--mode');
  const mode = mi > 0 ? process.argv[mi + 1] : 'simulate';
  if (mode !== 'simulate' && mode !== 'madvise') {
    console.error(`--mode takes simulate or madvise, not ${mode}`);
    process.exit(2);
  }
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  (require('./migration/demo') as typeof import('./migration/demo')).runMigrateDemo({ mode }).then(
    (r) => {
      process.exitCode = r.ran && !r.ok ? 1 : 0;
    },
    (e) => {
      console.error(e);
      process.exitCode = 1;
    },
  );
} else if (require.main === module) {
  // `hugetlb-ras-kvm-demo [--vcpus N] [--mem-lock on|on-fault]` (the package's bin), or `--vcpus=N`.
  const at = process.argv.indexOf('--vcpus');
  const vcpusArg = at > 0 ? process.argv[at + 1] : (process.argv.find((a) => a.startsWith('--vcpus='))?.slice(8) ?? '2');
  if (!/^[1-8]$/.test(vcpusArg ?? '')) {
    console.error(`hugetlb-ras-kvm-demo: --vcpus takes 1..8, not ${vcpusArg ?? 'nothing'}`);
    process.exit(2);
  }
  const vcpus = Number(vcpusArg);
  const ml = process.argv.indexOf('--mem-lock');
  const memLock = (ml > 0 ? process.argv[ml + 1] : process.argv.find((a) => a.startsWith('--mem-lock='))?.slice(11)) as MemLock | undefined;
  if (memLock && !['off', 'on', 'on-fault'].includes(memLock)) {
    console.error(`--mem-lock takes on, on-fault or off, not ${memLock}`);
    process.exit(2);
  }
  runKvmDemo({ vcpus, memLock }).then(
    (r) => {
      process.exitCode = r.ran && !r.ok ? 1 : 0;
    },
    (e) => {
      console.error(e);
      process.exitCode = 1;
    },
  );
}
