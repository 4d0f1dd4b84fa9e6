// Recovery latency benchmark: the engine (full path, vCPU threads running) against the naive
// approach of the 2024 QEMU RFC and the physical limit (memcpy of the same bytes), in one run.
// Prints a table, writes bench/out/results.json and bench/out/latency.svg.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { RasEngine, fillPattern, startVcpuLoad, verifyPattern, type RecoveredEvent } from '../src/index';
import { benchNative } from '../src/native';
import { benchBurst } from './burst';
import { benchKvmStall } from './kvm';

const DIR = process.env.HUGETLB_RAS_DIR ?? '/mnt/hugetlb-ras';
const OUT = path.resolve(__dirname, '../../bench/out');
const MiB = 1 << 20;
const GiB = 1 << 30;

interface Series {
  label: string;
  ns: number[];
}
interface SizeResult {
  pageSize: string;
  reps: number;
  engineTotal: Series; // SIGBUS -> huge page usable again
  engineSplit: Series; // read back + guard + swap, inside the worker
  vcpuStall: Series; // signal -> the stalled vCPU's access resumes (max over vCPUs per rep)
  naive: Series;
  limit: Series;
  hugeShare: number[]; // share of the recovered page still on 2 MiB pages
  bookkeepingBytesPerHugePage: number;
  reserveBytes: number;
  skipped?: string;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const median = (a: number[]) => quantile(a, 0.5);
function quantile(a: number[], q: number): number {
  if (a.length === 0) return NaN;
  const s = [...a].sort((x, y) => x - y);
  const i = (s.length - 1) * q;
  const lo = Math.floor(i);
  return s[lo] + (s[Math.ceil(i)] - s[lo]) * (i - lo);
}

async function waitReserve(engine: RasEngine): Promise<void> {
  for (let i = 0; i < 20_000; i++) {
    const s = engine.stats();
    if (s.reserveBytes >= s.reserveTarget) return;
    await sleep(1);
  }
}

async function benchSize(label: string, huge: number, dir: string, reps: number, vcpus: number): Promise<SizeResult> {
  const res: SizeResult = {
    pageSize: label,
    reps,
    engineTotal: { label: 'engine: SIGBUS to usable', ns: [] },
    engineSplit: { label: 'engine: split (read+guard+swap)', ns: [] },
    vcpuStall: { label: 'engine: vCPU stall', ns: [] },
    naive: { label: 'naive (QEMU RFC): MAP_FIXED+populate, 4 KiB preads', ns: [] },
    limit: { label: 'limit: memcpy of the page', ns: [] },
    hugeShare: [],
    bookkeepingBytesPerHugePage: 0,
    reserveBytes: 0,
  };
  // Engine, naive baseline and limit are measured rep by rep, interleaved, so that the machine's
  // noise (a shared 2-core host) hits all three alike.
  const engine = RasEngine.open({ reserveBytes: 'auto', lostPageGuard: 'guard' });
  const naiveEngine = RasEngine.open({ reserveBytes: 0 });
  const file = path.join(dir, `bench-${process.pid}`);
  try {
    const region = engine.mapRegion({ name: 'bench', path: file, size: huge });
    res.bookkeepingBytesPerHugePage = region.bookkeepingBytes;
    const got: { last?: RecoveredEvent } = {};
    engine.on('recovered', (e) => (got.last = e));
    for (let rep = 0; rep < reps + 1; rep++) {
      // --- the engine: full path, vCPUs running, silent poison found by a vCPU
      fillPattern(region, rep + 1);
      await waitReserve(engine);
      res.reserveBytes = engine.stats().reserveBytes;
      const load = startVcpuLoad(engine, { region, threads: vcpus, seed: rep + 1, writeRatio: 0.25 });
      await sleep(20);
      got.last = undefined;
      engine.injectPoison(region, (4096 * (37 + rep * 11)) % huge, { mode: 'simulate', signal: false });
      for (let i = 0; i < 120_000 && !got.last; i++) await sleep(1);
      await engine.whenIdle({ timeoutMs: 120_000 });
      await sleep(5);
      const report = await load.stop();
      const check = verifyPattern(region, rep + 1);
      const last = got.last as RecoveredEvent | undefined;
      if (!last || report.wrongBytes !== 0 || check.wrongBytes !== 0 || check.unreadableOffsets.length !== 1)
        throw new Error(`rep ${rep}: recovery incorrect (${JSON.stringify({ wrong: report.wrongBytes, check: check.wrongBytes, unreadable: check.unreadableOffsets.length })})`);
      const share = engine.hugeMappedShare(region, 0);
      await engine.resetRegion(region);
      // --- the naive baseline on a fresh file with the same poison
      const f = path.join(dir, `bench-naive-${process.pid}-${rep}`);
      const nregion = naiveEngine.mapRegion({ name: `naive${rep}`, path: f, size: huge });
      fillPattern(nregion, 1);
      naiveEngine.injectPoison(nregion, 4096 * 37, { mode: 'simulate', signal: false });
      const naive = benchNative().naiveRecover(nregion.address, nregion.hugePageSize, f, nregion.fileOffset, [4096 * 37]);
      if (naive.lost !== 1) throw new Error('naive baseline did not see the poisoned subpage');
      fs.rmSync(f, { force: true });
      naiveEngine.unmapRegion(nregion);
      // --- the limit
      const limit = benchNative().memcpyLimit(huge);
      if (rep === 0) continue; // warm-up
      res.engineTotal.ns.push(Number(last.totalNs));
      res.engineSplit.ns.push(Number(last.durationNs));
      const stalls = report.stalls.map((s) => Number(s.stallNs));
      if (stalls.length) res.vcpuStall.ns.push(Math.max(...stalls));
      res.hugeShare.push(share);
      res.naive.ns.push(naive.ns);
      res.limit.ns.push(limit);
    }
  } finally {
    fs.rmSync(file, { force: true });
    engine.close();
    naiveEngine.close();
  }
  return res;
}

function fmt(ns: number): string {
  if (!Number.isFinite(ns)) return '-';
  if (ns >= 1e6) return `${(ns / 1e6).toFixed(1)} ms`;
  return `${(ns / 1e3).toFixed(0)} us`;
}

function table(results: SizeResult[]): string {
  const rows: string[] = [];
  rows.push('| page | what | median | p10 - p90 | / limit |');
  rows.push('|---|---|---|---|---|');
  for (const r of results) {
    if (r.skipped) {
      rows.push(`| ${r.pageSize} | skipped: ${r.skipped} | | | |`);
      continue;
    }
    const lim = median(r.limit.ns);
    for (const s of [r.limit, r.engineTotal, r.engineSplit, r.vcpuStall, r.naive]) {
      rows.push(`| ${r.pageSize} | ${s.label} | ${fmt(median(s.ns))} | ${fmt(quantile(s.ns, 0.1))} - ${fmt(quantile(s.ns, 0.9))} | ${(median(s.ns) / lim).toFixed(2)}x |`);
    }
  }
  rows.push('');
  for (const r of results) {
    if (r.skipped) continue;
    const lim = median(r.limit.ns);
    rows.push(
      `${r.pageSize}: engine total/limit ${(median(r.engineTotal.ns) / lim).toFixed(2)}x, ` +
        `vCPU stall/limit ${(median(r.vcpuStall.ns) / lim).toFixed(2)}x, ` +
        `naive/engine ${(median(r.naive.ns) / median(r.engineTotal.ns)).toFixed(1)}x faster, ` +
        `still on 2 MiB pages after recovery: ${(median(r.hugeShare) * 100).toFixed(2)}%, ` +
        `bookkeeping ${r.bookkeepingBytesPerHugePage} B per region of one huge page, reserve ${r.reserveBytes >> 20} MiB, ` +
        `${r.reps} reps`,
    );
  }
  return rows.join('\n');
}

/** Latency distributions on a log scale, one panel per page size. */
function svg(results: SizeResult[]): string {
  const done = results.filter((r) => !r.skipped);
  const W = 900;
  const rowH = 34;
  const panelH = 5 * rowH + 50;
  const H = done.length * panelH + 20;
  const x0 = 330;
  const x1 = W - 30;
  const colors = ['#888', '#1f77b4', '#6baed6', '#2ca02c', '#d62728'];
  const parts: string[] = [];
  parts.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="12">`);
  parts.push(`<rect width="100%" height="100%" fill="white"/>`);
  done.forEach((r, pi) => {
    const series = [r.limit, r.engineTotal, r.engineSplit, r.vcpuStall, r.naive];
    const all = series.flatMap((s) => s.ns).filter((v) => v > 0);
    const lo = Math.log10(Math.min(...all)) - 0.1;
    const hi = Math.log10(Math.max(...all)) + 0.1;
    const X = (ns: number) => x0 + ((Math.log10(ns) - lo) / (hi - lo)) * (x1 - x0);
    const top = 20 + pi * panelH;
    parts.push(`<text x="10" y="${top + 12}" font-weight="bold">${r.pageSize} huge page: recovery latency (log scale, ${r.reps} reps; dots = reps, bar = median)</text>`);
    for (let d = Math.floor(lo); d <= Math.ceil(hi); d++) {
      for (const m of [1, 2, 5]) {
        const v = m * 10 ** d;
        if (Math.log10(v) < lo || Math.log10(v) > hi) continue;
        const x = X(v);
        parts.push(`<line x1="${x}" y1="${top + 20}" x2="${x}" y2="${top + 20 + 5 * rowH}" stroke="${m === 1 ? '#ccc' : '#eee'}"/>`);
        parts.push(`<text x="${x}" y="${top + 35 + 5 * rowH}" text-anchor="middle" fill="#555">${fmt(v)}</text>`);
      }
    }
    series.forEach((s, i) => {
      const y = top + 20 + i * rowH + rowH / 2;
      parts.push(`<text x="10" y="${y + 4}">${s.label}</text>`);
      for (const v of s.ns) if (v > 0) parts.push(`<circle cx="${X(v).toFixed(1)}" cy="${y}" r="3" fill="${colors[i]}" fill-opacity="0.6"/>`);
      const m = median(s.ns);
      if (m > 0) parts.push(`<line x1="${X(m)}" y1="${y - 10}" x2="${X(m)}" y2="${y + 10}" stroke="black" stroke-width="2"/>`);
    });
  });
  parts.push('</svg>');
  return parts.join('\n');
}

async function main(): Promise<void> {
  const reps2m = Number(process.env.BENCH_REPS_2M ?? 30);
  const reps1g = Number(process.env.BENCH_REPS_1G ?? 5);
  const vcpus = Number(process.env.BENCH_VCPUS ?? 2);
  const results: SizeResult[] = [];
  console.log(`hugetlb-ras benchmark: ${vcpus} vCPU threads, simulated poison (same signal, same EIO), ${new Date().toISOString()}`);
  results.push(await benchSize('2 MiB', 2 * MiB, path.join(DIR, '2M'), reps2m, vcpus));
  let have1g = false;
  try {
    have1g = fs.statfsSync(path.join(DIR, '1G')).bsize === GiB;
  } catch {
    /* not mounted */
  }
  const free1g = have1g ? Number(fs.readFileSync('/sys/kernel/mm/hugepages/hugepages-1048576kB/free_hugepages', 'utf8')) : 0;
  if (have1g && free1g >= 1) results.push(await benchSize('1 GiB', GiB, path.join(DIR, '1G'), reps1g, vcpus));
  else results.push({ pageSize: '1 GiB', skipped: `no free 1 GiB page at ${DIR}/1G (run as root: scripts/setup-hugetlbfs.sh)` } as SizeResult);
  const burst = await benchBurst(Number(process.env.BENCH_REPS_BURST ?? 5), path.join(DIR, '2M'));
  const kvm = benchKvmStall(Number(process.env.BENCH_REPS_KVM ?? 10), DIR);
  const ratio = (a: number[], lim: number[]) => (median(a) / median(lim)).toFixed(2);
  const extra = [
    '',
    '| row | median | p10 - p90 | / memcpy of 2 MiB |',
    '|---|---|---|---|',
    `| burst: ${burst.pages} pages of 2 MiB poisoned back to back, each (first report to usable) | ${fmt(median(burst.perPageNs))} | ${fmt(quantile(burst.perPageNs, 0.1))} - ${fmt(quantile(burst.perPageNs, 0.9))} | ${ratio(burst.perPageNs, burst.limitNs)}x |`,
    kvm.skipped
      ? `| KVM vCPU stall (reference VMM): not measured: ${kvm.skipped} | | | |`
      : `| KVM vCPU stall, 2 MiB page (reference VMM: the exit that found the poison to KVM_RUN re-entered) | ${fmt(median(kvm.stallNs))} | ${fmt(quantile(kvm.stallNs, 0.1))} - ${fmt(quantile(kvm.stallNs, 0.9))} | ${ratio(kvm.stallNs, kvm.limitNs)}x |`,
    '',
    `burst: reserve misses ${burst.reserveMisses} over ${burst.limitNs.length} reps; KVM: ${kvm.stallNs.length} stalls over ${kvm.limitNs.length} VMM runs, the poison reached the vCPUs as ${kvm.exits.mmio} MMIO exits, ${kvm.exits.sigbus} SIGBUS, ${kvm.exits.efault} EFAULT`,
  ];
  const legend = [
    '',
    'rows: limit = memcpy of the same bytes into faulted memory (every ratio is against it); engine: SIGBUS to usable =',
    'report to the huge page in place again; split = the recovery lane\'s read-back, guard and swap; vCPU stall = a vCPU',
    'thread\'s fault to its access resuming, the longest of the rep (it adds the thread\'s own wake-up and scheduling on',
    'this shared host, which is where its tail comes from); naive = the 2024 QEMU RFC\'s approach; burst = each of 8 pages',
    'poisoned at once, first report to usable; KVM vCPU stall = the reference VMM\'s exit that found the poison to',
    'KVM_RUN re-entered.',
  ];
  const text = table(results) + '\n' + extra.join('\n') + '\n' + legend.join('\n');
  console.log(text);
  fs.mkdirSync(OUT, { recursive: true });
  fs.writeFileSync(path.join(OUT, 'results.json'), JSON.stringify({ date: new Date().toISOString(), vcpus, results, burst, kvm }, null, 2));
  fs.writeFileSync(path.join(OUT, 'latency.svg'), svg(results));
  fs.writeFileSync(path.join(OUT, 'table.md'), text + '\n');
  console.log(`wrote ${path.join(OUT, 'results.json')}, latency.svg, table.md`);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
