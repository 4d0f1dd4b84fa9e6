// The benchmark's idle row (issue 24 #2): what an engine costs while nothing goes wrong. A child
// process stands for a VMM: it opens an engine with a journal, maps a region, has one recovery, and
// then does nothing; over the same window a bare `node` child does nothing too. For both: CPU time
// (utime + stime from /proc/<pid>/stat), wake-ups (voluntary context switches of all its threads,
// /proc/<pid>/task/*/status) and RSS at the end (VmRSS), and the engine's reserve.
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

export interface IdleSample {
  cpuMs: number;
  wakeups: number;
  rssKiB: number;
  threads: number;
}

export interface IdleResult {
  seconds: number;
  engine: IdleSample & { reserveBytes: number; reserveTarget: number };
  bare: IdleSample;
  skipped?: string;
}

const TICK_MS = 10; // USER_HZ = 100 on Linux

function sample(pid: number): IdleSample {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const ticks = Number(fields[11]) + Number(fields[12]); // utime, stime (fields 14, 15)
  let wakeups = 0;
  let threads = 0;
  for (const t of fs.readdirSync(`/proc/${pid}/task`)) {
    try {
      const m = /voluntary_ctxt_switches:\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/task/${t}/status`, 'utf8'));
      if (m) wakeups += Number(m[1]);
      threads++;
    } catch {
      /* the thread ended */
    }
  }
  const rss = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return { cpuMs: ticks * TICK_MS, wakeups, rssKiB: rss ? Number(rss[1]) : 0, threads };
}

function startChild(code: string, env: NodeJS.ProcessEnv): Promise<{ child: ChildProcess; first: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['-e', code], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const nl = out.indexOf('\n');
      if (nl >= 0) resolve({ child, first: out.slice(0, nl) });
    });
    child.on('exit', (c) => reject(new Error(`idle child exited (${c}) before it was ready: ${out}`)));
  });
}

export async function benchIdle(seconds: number, dir: string): Promise<IdleResult> {
  const pkg = JSON.stringify(path.resolve(__dirname, '../src/index'));
  const jdir = fs.mkdtempSync(path.join(os.tmpdir(), 'ras-bench-idle-'));
  const file = path.join(dir, `bench-idle-${process.pid}`);
  const vmm = `
    const { RasEngine } = require(${pkg});
    const e = RasEngine.open({ journalPath: process.env.J });
    const r = e.mapRegion({ name: 'ram', path: process.env.F, size: 16 << 20 });
    e.injectPoison(r, (2 << 20) + 5 * 4096, { mode: 'simulate' });
    e.whenIdle().then(() => setTimeout(() => {
      const s = e.stats();
      console.log(JSON.stringify({ reserveBytes: s.reserveBytes, reserveTarget: s.reserveTarget }));
      setTimeout(() => {}, 3600e3);
    }, 2000));
  `;
  const bare = `console.log('{}'); setTimeout(() => {}, 3600e3);`;
  const a = await startChild(vmm, { J: path.join(jdir, 'journal'), F: file });
  const b = await startChild(bare, {});
  try {
    const reserve = JSON.parse(a.first) as { reserveBytes: number; reserveTarget: number };
    const a0 = sample(a.child.pid!);
    const b0 = sample(b.child.pid!);
    await new Promise((r) => setTimeout(r, seconds * 1000));
    const a1 = sample(a.child.pid!);
    const b1 = sample(b.child.pid!);
    const diff = (x: IdleSample, y: IdleSample): IdleSample => ({ cpuMs: y.cpuMs - x.cpuMs, wakeups: y.wakeups - x.wakeups, rssKiB: y.rssKiB, threads: y.threads });
    return { seconds, engine: { ...diff(a0, a1), ...reserve }, bare: diff(b0, b1) };
  } finally {
    a.child.kill('SIGKILL');
    b.child.kill('SIGKILL');
    await new Promise((r) => setTimeout(r, 200));
    fs.rmSync(file, { force: true });
    fs.rmSync(jdir, { recursive: true, force: true });
  }
}

export function idleTable(r: IdleResult): string[] {
  const MiB = 1 << 20;
  return [
    '',
    `| idle over ${r.seconds} s (after one recovery) | CPU | wake-ups (voluntary switches, all threads) | RSS | threads |`,
    '|---|---|---|---|---|',
    `| engine: one 16 MiB region of 2 MiB pages, a journal; reserve held ${(r.engine.reserveBytes / MiB).toFixed(0)} MiB (target ${(r.engine.reserveTarget / MiB).toFixed(0)} MiB) | ${r.engine.cpuMs} ms | ${r.engine.wakeups} | ${(r.engine.rssKiB / 1024).toFixed(0)} MiB | ${r.engine.threads} |`,
    `| bare node | ${r.bare.cpuMs} ms | ${r.bare.wakeups} | ${(r.bare.rssKiB / 1024).toFixed(0)} MiB | ${r.bare.threads} |`,
  ];
}
