// The downtime of the reference VMM's live migration (issue 22 #4), ratios in one run: stop-to-
// running (the source's vCPUs paused to the destination's started, wall clock of this host: both
// VMMs run here) with and without lost frames, each against the limit = memcpy of the bytes the
// final round sent (its RAM frames and the vCPU/VM state). Each rep is a pair of VMM processes
// (vmm/src/migration/main.js) over a unix socket, simulated poison; no /dev/kvm: skipped.
//   node dist/bench/migrate.js [reps]     (npm run bench:migrate)
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { benchNative } from '../src/native';
import { fmt, quantile } from './svg';

const MiB = 1 << 20;
const MAIN = path.resolve(__dirname, '../vmm/src/migration/main.js');

export interface DowntimeRow { lost: number; downtimeNs: number[]; limitNs: number[]; finalBytes: number[]; rounds: number[] }
export interface DowntimeResult { rows: DowntimeRow[]; skipped?: string; limitFrom?: string }

// The memcpy limit: the bench addon's (native memcpy into faulted memory); where it is not shipped
// (the lab's initramfs carries only the engine and the VMM), Buffer.copy between faulted buffers
// (memmove underneath), the best of 20.
function memcpyLimit(bytes: number): { ns: number; from: string } {
  try {
    return { ns: benchNative().memcpyLimit(bytes), from: 'hugetlb_ras_bench memcpyLimit' };
  } catch {
    const a = Buffer.alloc(bytes, 1);
    const b = Buffer.alloc(bytes, 2);
    let best = Infinity;
    for (let i = 0; i < 20; i++) {
      const t0 = process.hrtime.bigint();
      a.copy(b);
      best = Math.min(best, Number(process.hrtime.bigint() - t0));
    }
    return { ns: best, from: 'Buffer.copy (no bench addon here)' };
  }
}

function run(role: string, opts: unknown, onLine?: (l: string) => void): Promise<any> {
  return new Promise((resolve) => {
    const c = spawn(process.execPath, [MAIN, role, JSON.stringify(opts)], { stdio: ['pipe', 'pipe', 'inherit'] });
    let buf = '';
    let result: any = null;
    c.stdout.on('data', (d: Buffer) => {
      buf += d.toString();
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        const l = buf.slice(0, i);
        buf = buf.slice(i + 1);
        if (l.startsWith('RESULT ')) result = JSON.parse(l.slice(7));
        else onLine?.(l);
      }
    });
    c.on('exit', () => resolve(result));
  });
}

async function once(dir: string, withLost: boolean): Promise<{ downtimeNs: number; finalBytes: number; rounds: number } | string> {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'bench-migrate-'));
  const socket = path.join(tmp, 's');
  const regions = [
    { name: 'low', pageSize: '2M', size: 4 * MiB, guestPhysAddr: '0x0n', verify: [{ offset: 2 * MiB, size: 64 * 1024 }] },
    { name: 'ram2m', pageSize: '2M', size: 4 * MiB, guestPhysAddr: '0x1000000n', verify: [{ offset: 0, size: 64 * 1024 }, { offset: 2 * MiB, size: 64 * 1024 }] },
  ];
  const common = { dir2M: path.join(dir, '2M'), engine: { reserveBytes: 0 }, socket };
  // Lost while the guest runs, before the move: what the downtime then pays for is the migration's
  // own work with lost frames (the final manifest, frames skipped, the destination's import), not a
  // recovery that happens to land in the stop window.
  const lost = withLost ? { before: [{ region: 'ram2m', offset: 0x7000 }, { region: 'ram2m', offset: 2 * MiB + 0x9000 }] } : {};
  try {
    let up!: () => void;
    const listening = new Promise<void>((r) => (up = r));
    const dp = run('dest', { ...common, passes: 1 }, (l) => l === 'LISTENING' && up());
    await Promise.race([listening, dp]);
    const s = await run('source', { ...common, vcpus: 2, regions, mode: 'simulate', ...lost });
    const d = await dp;
    if (!s?.ok || !d?.ok) return `a VMM failed: ${s?.error ?? ''} ${d?.error ?? ''}`;
    return { downtimeNs: d.downtimeMs * 1e6, finalBytes: s.final.bytes + s.stateBytes, rounds: s.rounds.length };
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

export async function benchMigrationDowntime(reps: number, dir: string): Promise<DowntimeResult> {
  try {
    fs.accessSync('/dev/kvm', fs.constants.R_OK | fs.constants.W_OK);
  } catch {
    return { rows: [], skipped: 'no /dev/kvm (read/write) here' };
  }
  const rows: DowntimeRow[] = [0, 2].map((lost) => ({ lost, downtimeNs: [], limitNs: [], finalBytes: [], rounds: [] }));
  const out: DowntimeResult = { rows };
  // Interleaved, so that a slow phase of the machine weighs on both rows alike.
  for (let rep = 0; rep < reps; rep++) {
    for (const row of rows) {
      const r = await once(dir, row.lost > 0);
      if (typeof r === 'string') return { ...out, skipped: r };
      row.downtimeNs.push(r.downtimeNs);
      row.finalBytes.push(r.finalBytes);
      row.rounds.push(r.rounds);
      const lim = memcpyLimit(Math.max(r.finalBytes, 4096));
      row.limitNs.push(lim.ns);
      out.limitFrom = lim.from;
    }
  }
  return out;
}

export function downtimeTable(res: DowntimeResult): string[] {
  if (res.skipped) return [`| live migration downtime (reference VMM): not measured: ${res.skipped} | | | |`];
  const med = (a: number[]) => quantile(a, 0.5);
  return res.rows.map(
    (r) =>
      `| live migration stop-to-running, ${r.lost} lost frames (final round ${Math.round(med(r.finalBytes))} bytes, ${med(r.rounds)} rounds) | ${fmt(med(r.downtimeNs))} | ${fmt(quantile(r.downtimeNs, 0.1))} - ${fmt(quantile(r.downtimeNs, 0.9))} | ${(med(r.downtimeNs) / med(r.limitNs)).toFixed(0)}x |`,
  );
}

if (require.main === module) {
  const reps = Number(process.argv[2] ?? 5);
  const dir = process.env.HUGETLB_RAS_DIR ?? '/mnt/hugetlb-ras';
  benchMigrationDowntime(reps, dir).then((r) => {
    console.log('| what | median | p10 - p90 | / memcpy of the final round |');
    console.log('|---|---|---|---|');
    for (const l of downtimeTable(r)) console.log(l);
    if (!r.skipped) {
      const [a, b] = r.rows;
      console.log(`\nlimit: ${r.limitFrom}`);
      console.log(`with lost frames / without: ${(quantile(b.downtimeNs, 0.5) / quantile(a.downtimeNs, 0.5)).toFixed(2)}x (${reps} reps each)`);
    }
    console.log(JSON.stringify(r));
  });
}
