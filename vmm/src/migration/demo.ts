// The migration demo (`npm run demo -- --migrate`, `hugetlb-ras-kvm-demo --migrate`): two VMM
// processes on this machine's KVM, poison at the source (one frame before the move, one with the
// guest stopped before the final round), live migration over a unix socket, and what the guest
// says at the destination. Without /dev/kvm it says so and runs nothing (as the KVM demo).
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawn } from 'node:child_process';
import { kvmAvailable, MiB } from '../vmm';
import type { SourceOptions, DestOptions } from './main';

export interface MigrateDemoResult { ran: boolean; reason?: string; ok?: boolean; source?: any; destination?: any; failures?: string[] }

const MAIN = path.join(__dirname, 'main.js');

function side(role: string, opts: unknown, print: (l: string) => void, onLine?: (l: string) => void): Promise<{ result: any; code: number | null }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [MAIN, role, JSON.stringify(opts)], { stdio: ['pipe', 'pipe', 'inherit'] });
    let buf = '';
    let result: any = null;
    child.stdout.on('data', (d: Buffer) => {
      buf += d.toString();
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        if (line.startsWith('RESULT ')) result = JSON.parse(line.slice(7));
        else {
          onLine?.(line);
          if (line.startsWith('GUEST ') && !/PASS/.test(line)) print(`    ${line.slice(6)}`);
        }
      }
    });
    child.on('exit', (code) => resolve({ result, code }));
  });
}

export async function runMigrateDemo(opts: { mode?: 'simulate' | 'madvise'; dir?: string; print?: (l: string) => void } = {}): Promise<MigrateDemoResult> {
  const print = opts.print ?? ((l: string) => console.log(l));
  const kvm = kvmAvailable();
  if (!kvm.ok) {
    print(`migration demo: not run: ${kvm.reason}. It needs /dev/kvm (read/write) and hugetlbfs (npm run setup:hugetlbfs).`);
    return { ran: false, reason: kvm.reason };
  }
  const root = opts.dir ?? process.env.HUGETLB_RAS_DIR ?? '/mnt/hugetlb-ras';
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'hugetlb-ras-migrate-'));
  const socket = path.join(tmp, 'migrate.sock');
  const W = 64 * 1024;
  const regions = [
    { name: 'low', pageSize: '2M' as const, size: 4 * MiB, guestPhysAddr: 0n, verify: [{ offset: 2 * MiB, size: W }] },
    { name: 'ram2m', pageSize: '2M' as const, size: 4 * MiB, guestPhysAddr: 0x1000000n, verify: [{ offset: 0, size: W }, { offset: 2 * MiB, size: W }] },
  ];
  const before = [{ region: 'ram2m', offset: 0x7000 }];
  const stopped = [{ region: 'ram2m', offset: 2 * MiB + 0x9000 }];
  const mode = opts.mode ?? 'simulate';
  const common = { dir2M: path.join(root, '2M'), engine: { reserveBytes: 0 } };
  const src: SourceOptions = { ...common, socket, vcpus: 2, regions, mode, before, stopped };
  const dst: DestOptions = { ...common, socket, passes: 2, expectMces: ['0x1209000'] };
  const ser = (v: unknown) => JSON.parse(JSON.stringify(v, (_k, x) => (typeof x === 'bigint' ? '0x' + x.toString(16) + 'n' : x)));
  print(`migration demo: two reference VMM processes, 2 vCPUs, guest RAM ${regions.map((r) => `${r.name} (${r.size / MiB} MiB of 2M pages at GPA 0x${r.guestPhysAddr.toString(16)})`).join(', ')}, ${mode} poison`);
  try {
    let up!: () => void;
    const listening = new Promise<void>((r) => (up = r));
    print('  destination: listening on a unix socket; its guest says:');
    const dp = side('dest', ser(dst), print, (l) => l === 'LISTENING' && up());
    await Promise.race([listening, dp]);
    const s = await side('source', ser(src), () => {});
    const d = await dp;
    if (!s.result?.ok || !d.result?.ok) {
      const failures = [s.result?.error, d.result?.error].filter(Boolean);
      print(`  result: FAILED: ${failures.join('; ')}`);
      return { ran: true, ok: false, failures };
    }
    const S = s.result;
    const D = d.result;
    print(`  source: the guest took its machine check for ${S.mcesAtSource.map((m: any) => m.gpa).join(', ') || 'nothing'} before the move; ${S.stopped.map((x: any) => x.gpa).join(', ')} was lost with the guest stopped`);
    print(`  stream: ${S.rounds.length} pre-copy round(s) (${S.rounds.map((r: any) => `${r.ram.sent} frames${r.dirty >= 0 ? ` of ${r.dirty} dirty` : ''}`).join(', ')}), final round ${S.final.sent} frames, ${S.rounds.reduce((a: number, r: any) => a + r.ram.lost, 0) + S.final.lost} lost frames skipped (never sent), vCPU+VM state ${S.stateBytes} bytes, ${(S.bytes / MiB).toFixed(2)} MiB in all`);
    print(`  manifest: first ${JSON.stringify(S.firstManifest.regions.flatMap((r: any) => r.lost))}, final ${JSON.stringify(S.manifest.regions.flatMap((r: any) => r.lost))}`);
    print(`  destination: imported ${D.imports.map((i: any) => i.imported).join(' + ')} frame(s), received ${D.frames} frames, lost here ${D.lostHere.join(', ')}, stop-to-running ${D.downtimeMs.toFixed(1)} ms`);
    const failures: string[] = [];
    if (JSON.stringify(D.lostHere) !== JSON.stringify(S.lostAtSource)) failures.push(`lost here ${D.lostHere} != lost at the source ${S.lostAtSource}`);
    if (D.wrongBytes !== 0) failures.push(`${D.wrongBytes} wrong bytes`);
    if (!D.mcesHere.some((m: any) => m.gpa === '0x1209000')) failures.push('no machine check at the destination for the frame lost while stopped');
    print(`  the guest's verdict at the destination: ${D.passesAfter.map((p: number, i: number) => `vCPU ${i} pass ${p}`).join(', ')}, wrong bytes ${D.wrongBytes}, machine checks here ${D.mcesHere.map((m: any) => m.gpa).join(', ') || 'none'}`);
    print(failures.length ? `  result: FAILED: ${failures.join('; ')}` : '  result: every frame lost at the source is lost at the destination and no other; the guest kept verifying with no wrong byte');
    return { ran: true, ok: failures.length === 0, source: S, destination: D, failures };
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}
