// Recovery latency benchmark, in one run and interleaved rep by rep: the engine's eager path, its
// lazy path (userfaultfd), the naive approach of the 2024 QEMU RFC, and the limit (memcpy of the
// same bytes). Prints a table, writes bench/out/results.json, table.md and latency.svg.
//
// Rows (each a median over reps, with p10 - p90):
//   limit: memcpy of the page / of 2 MiB   copying the bytes into already-faulted memory
//   eager: SIGBUS to usable                 first report to the page in place, vCPUs released
//   eager: vCPU stall                       signal to the stalled vCPU's access completing (max over vCPUs)
//   lazy: vCPU stall                        the same on the lazy path (the access may wait for its piece)
//   lazy: SIGBUS to in place                first report to the registered range in place, vCPUs released
//   lazy: whole page usable again           first report to every piece in place (fill done)
//   naive (QEMU RFC)                        MAP_FIXED anonymous + MAP_POPULATE, then 4 KiB preads
//   burst (bench/burst.ts)                  8 huge pages of 2 MiB poisoned back to back, found by vCPUs:
//                                           each page's first report to usable, against memcpy of 2 MiB
//   KVM vCPU stall (bench/kvm.ts)           the reference VMM: the exit that found the poison to KVM_RUN
//                                           re-entered, against memcpy of 2 MiB
//   scaling (bench/scale.ts)                per lost frame with 10, 1 000, 100 000 held; a restart
//                                           replaying them; the bookkeeping of 1 TiB
//   migration (bench/migration.ts)          the guarded copy (C API copy_from_guest, readAvailable) against
//                                           memcpy of the same bytes; importLost of 10, 1 000, 100 000 frames
//                                           against memcpy of the bytes split
//   idle (bench/idle.ts)                    CPU, wake-ups and RSS of an idle engine over 60 s
//                                           (BENCH_IDLE_S), against a bare node
// BENCH_ONLY=scale,idle,migration runs only those (the latency rows need the whole run to compare ratios).
import * as fs from 'node:fs';
import * as path from 'node:path';
import { RasEngine, type RecoveredEvent, type Region } from '../src/index';
import { fillPattern, startVcpuLoad, verifyPattern } from '../src/testing';
import { benchNative, native } from '../src/native';
import { benchBurst } from './burst';
import { benchIdle, idleTable } from './idle';
import { benchKvmStall } from './kvm';
import { benchMigration, migrationTable } from './migration';
import { benchScale, scaleTable } from './scale';
import { fmt, median, quantile, svg, type Series } from './svg';

const DIR = process.env.HUGETLB_RAS_DIR ?? '/mnt/hugetlb-ras';
const OUT = path.resolve(__dirname, '../../bench/out');
const MiB = 1 << 20;
const GiB = 1 << 30;

interface SizeResult {
  pageSize: string;
  reps: number;
  rows: Series[];
  limit: Series;
  limit2m: Series;
  hugeShare: { eager: number[]; lazy: number[] };
  lazyAvailable: boolean;
  bookkeepingBytesPerHugePage: number;
  reserveBytes: number;
  skipped?: string;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const S = (label: string): Series => ({ label, ns: [] });

async function waitReserve(engine: RasEngine): Promise<void> {
  for (let i = 0; i < 20_000; i++) {
    const s = engine.stats();
    if (s.reserveBytes >= s.reserveTarget) return;
    await sleep(1);
  }
}

/** One recovery of a silent poison found by running vCPUs; checks every byte. */
async function oneRecovery(engine: RasEngine, region: Region, seed: number, off: number, vcpus: number, lazy: boolean) {
  native.setLazyRecovery(lazy);
  fillPattern(region, seed);
  await waitReserve(engine);
  const got: { last?: RecoveredEvent } = {};
  const on = (e: RecoveredEvent) => (got.last = e);
  engine.on('recovered', on);
  const load = startVcpuLoad(engine, { region, threads: vcpus, seed, writeRatio: 0.25 });
  await sleep(20);
  engine.injectPoison(region, off, { mode: 'simulate', signal: false });
  for (let i = 0; i < 120_000 && !got.last; i++) await sleep(1);
  await engine.whenIdle({ timeoutMs: 120_000 });
  await sleep(5);
  const report = await load.stop();
  engine.off('recovered', on);
  const check = verifyPattern(region, seed);
  const last = got.last as RecoveredEvent | undefined;
  if (!last || report.wrongBytes !== 0 || check.wrongBytes !== 0 || check.unreadableOffsets.length !== 1)
    throw new Error(`recovery incorrect (${JSON.stringify({ lazy, wrong: report.wrongBytes, check: check.wrongBytes, unreadable: check.unreadableOffsets.length })})`);
  if ((last.path === 'lazy') !== lazy) throw new Error(`expected the ${lazy ? 'lazy' : 'eager'} path, got ${last.path}`);
  const stalls = report.stalls.map((s) => Number(s.accessNs || s.stallNs));
  if (process.env.BENCH_DEBUG)
    console.log(JSON.stringify({ lazy, front: Number(last.durationNs) / 1e3, inPlace: Number(last.totalNs) / 1e3, stalls: report.stalls.map((s) => [s.thread, Number(s.stallNs) / 1e3, Number(s.accessNs) / 1e3, Number(s.startNs - report.stalls[0].startNs) / 1e3]) }));
  const share = engine.hugeMappedShare(region, 0);
  await engine.resetRegion(region);
  return { last, stall: stalls.length ? Math.max(...stalls) : 0, share };
}

async function benchSize(label: string, huge: number, dir: string, reps: number, vcpus: number): Promise<SizeResult> {
  const lazyAvailable = native.lazyInfo().available;
  const rows = {
    eagerTotal: S('eager: SIGBUS to usable'),
    eagerSplit: S('eager: split on the lane (read+guard+swap)'),
    eagerStall: S('eager: vCPU stall (signal to access done)'),
    lazyStall: S('lazy: vCPU stall (signal to access done)'),
    lazyFront: S('lazy: front half on the lane (in place, touched piece in)'),
    lazyInPlace: S('lazy: SIGBUS to in place (vCPUs released)'),
    lazyWhole: S('lazy: whole page usable again'),
    lazyBlockFault: S('lazy: of that, the back half faulting in a block not from the reserve'),
    naive: S('naive (QEMU RFC): MAP_FIXED+populate, 4 KiB preads'),
  };
  const res: SizeResult = {
    pageSize: label,
    reps,
    rows: [],
    limit: S('limit: memcpy of the page'),
    limit2m: S('limit: memcpy of 2 MiB'),
    hugeShare: { eager: [], lazy: [] },
    lazyAvailable,
    bookkeepingBytesPerHugePage: 0,
    reserveBytes: 0,
  };
  // Every participant is measured rep by rep, interleaved, so that the machine's noise (a shared
  // 2-core host) hits all alike. Both engine paths use the poison marker guard ('uffd').
  const engine = RasEngine.open({ reserveBytes: 'auto', lostPageGuard: 'uffd' });
  const naiveEngine = RasEngine.open({ reserveBytes: 0 });
  const file = path.join(dir, `bench-${process.pid}`);
  try {
    const region = engine.mapRegion({ name: 'bench', path: file, size: huge });
    res.bookkeepingBytesPerHugePage = region.bookkeepingBytes;
    for (let rep = 0; rep < reps + 1; rep++) {
      const off = (4096 * (37 + rep * 11)) % huge;
      const eager = await oneRecovery(engine, region, rep + 1, off, vcpus, false);
      const lazy = lazyAvailable ? await oneRecovery(engine, region, rep + 101, off, vcpus, true) : undefined;
      res.reserveBytes = engine.stats().reserveBytes;
      // --- the naive baseline on a fresh file with the same poison
      const f = path.join(dir, `bench-naive-${process.pid}-${rep}`);
      const nregion = naiveEngine.mapRegion({ name: `naive${rep}`, path: f, size: huge });
      fillPattern(nregion, 1);
      naiveEngine.injectPoison(nregion, 4096 * 37, { mode: 'simulate', signal: false });
      const naive = benchNative().naiveRecover(nregion.address, nregion.hugePageSize, f, nregion.fileOffset, [4096 * 37]);
      if (naive.lost !== 1) throw new Error('naive baseline did not see the poisoned subpage');
      fs.rmSync(f, { force: true });
      naiveEngine.unmapRegion(nregion);
      // --- the limits
      const limit = benchNative().memcpyLimit(huge);
      const limit2m = huge === 2 * MiB ? limit : benchNative().memcpyLimit(2 * MiB);
      if (rep === 0) continue; // warm-up
      rows.eagerTotal.ns.push(Number(eager.last.totalNs));
      rows.eagerSplit.ns.push(Number(eager.last.durationNs));
      if (eager.stall) rows.eagerStall.ns.push(eager.stall);
      res.hugeShare.eager.push(eager.share);
      if (lazy) {
        if (lazy.stall) rows.lazyStall.ns.push(lazy.stall);
        rows.lazyInPlace.ns.push(Number(lazy.last.totalNs));
        rows.lazyFront.ns.push(Number(lazy.last.durationNs));
        rows.lazyWhole.ns.push(Number(lazy.last.filledNs));
        if (!lazy.last.usedReserve) rows.lazyBlockFault.ns.push(Number(lazy.last.blockFaultNs));
        res.hugeShare.lazy.push(lazy.share);
      }
      rows.naive.ns.push(naive.ns);
      res.limit.ns.push(limit);
      res.limit2m.ns.push(limit2m);
    }
  } finally {
    native.setLazyRecovery(true);
    fs.rmSync(file, { force: true });
    engine.close();
    naiveEngine.close();
  }
  res.rows = [res.limit, ...(huge === 2 * MiB ? [] : [res.limit2m]), ...Object.values(rows).filter((s) => s.ns.length > 0)];
  return res;
}

function table(results: SizeResult[]): string {
  const rows: string[] = [];
  rows.push('| page | what | median | p10 - p90 | / memcpy of the page | / memcpy of 2 MiB |');
  rows.push('|---|---|---|---|---|---|');
  for (const r of results) {
    if (r.skipped) {
      rows.push(`| ${r.pageSize} | skipped: ${r.skipped} | | | | |`);
      continue;
    }
    const lim = median(r.limit.ns);
    const lim2 = median(r.limit2m.ns);
    for (const s of r.rows)
      rows.push(`| ${r.pageSize} | ${s.label} | ${fmt(median(s.ns))} | ${fmt(quantile(s.ns, 0.1))} - ${fmt(quantile(s.ns, 0.9))} | ${(median(s.ns) / lim).toFixed(2)}x | ${(median(s.ns) / lim2).toFixed(2)}x |`);
  }
  rows.push('');
  for (const r of results) {
    if (r.skipped) continue;
    const pct = (a: number[]) => (a.length ? `${(median(a) * 100).toFixed(2)}%` : '-');
    rows.push(
      `${r.pageSize}: still on 2 MiB pages after recovery: eager ${pct(r.hugeShare.eager)}, lazy ${pct(r.hugeShare.lazy)}; ` +
        `lazy path ${r.lazyAvailable ? 'measured' : 'not available here'}; bookkeeping ${r.bookkeepingBytesPerHugePage} B per region of one huge page, ` +
        `reserve held ${r.reserveBytes >> 20} MiB; ${r.reps} reps`,
    );
  }
  return rows.join('\n');
}

async function main(): Promise<void> {
  const reps2m = Number(process.env.BENCH_REPS_2M ?? 30);
  const reps1g = Number(process.env.BENCH_REPS_1G ?? 5);
  const vcpus = Number(process.env.BENCH_VCPUS ?? 2);
  const only = process.env.BENCH_ONLY ? new Set(process.env.BENCH_ONLY.split(',')) : undefined;
  if (only) {
    const lines: string[] = [];
    const counts = process.env.BENCH_SCALE_COUNTS?.split(',').map(Number);
    if (only.has('scale')) lines.push(...scaleTable(await benchScale(path.join(DIR, '2M'), counts), fmt));
    if (only.has('idle')) lines.push(...idleTable(await benchIdle(Number(process.env.BENCH_IDLE_S ?? 60), path.join(DIR, '2M'))));
    if (only.has('migration')) lines.push(...migrationTable(benchMigration(path.join(DIR, '2M'), Number(process.env.BENCH_REPS_COPY ?? 10))));
    console.log(lines.join('\n'));
    return;
  }
  const results: SizeResult[] = [];
  console.log(`hugetlb-ras benchmark: ${vcpus} vCPU threads, simulated poison (same signal, same EIO), ${new Date().toISOString()}`);
  const li = native.lazyInfo();
  if (!li.available) console.log(`lazy path not available: ${li.reason}`);
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
  const scale = await benchScale(path.join(DIR, '2M'));
  const idle = await benchIdle(Number(process.env.BENCH_IDLE_S ?? 60), path.join(DIR, '2M'));
  const migration = benchMigration(path.join(DIR, '2M'), Number(process.env.BENCH_REPS_COPY ?? 10));
  const ratio = (a: number[], lim: number[]) => (median(a) / median(lim)).toFixed(2);
  const extra = [
    '',
    '| row | median | p10 - p90 | / memcpy of 2 MiB |',
    '|---|---|---|---|',
    `| burst (${burst.path}): ${burst.pages} pages of 2 MiB poisoned back to back, each: first report to usable (vCPUs released) | ${fmt(median(burst.perPageNs))} | ${fmt(quantile(burst.perPageNs, 0.1))} - ${fmt(quantile(burst.perPageNs, 0.9))} | ${ratio(burst.perPageNs, burst.limitNs)}x |`,
    `| burst (${burst.path}): the same, first report to the whole page in place | ${fmt(median(burst.filledNs))} | ${fmt(quantile(burst.filledNs, 0.1))} - ${fmt(quantile(burst.filledNs, 0.9))} | ${ratio(burst.filledNs, burst.limitNs)}x |`,
    kvm.skipped
      ? `| KVM vCPU stall (reference VMM): not measured: ${kvm.skipped} | | | |`
      : `| KVM vCPU stall, 2 MiB page (reference VMM: the exit that found the poison to KVM_RUN re-entered) | ${fmt(median(kvm.stallNs))} | ${fmt(quantile(kvm.stallNs, 0.1))} - ${fmt(quantile(kvm.stallNs, 0.9))} | ${ratio(kvm.stallNs, kvm.limitNs)}x |`,
    '',
    `burst: reserve misses ${burst.reserveMisses} over ${burst.limitNs.length} reps; KVM: ${kvm.stallNs.length} stalls over ${kvm.limitNs.length} VMM runs, the poison reached the vCPUs as ${kvm.exits.mmio} MMIO exits, ${kvm.exits.sigbus} SIGBUS, ${kvm.exits.efault} EFAULT`,
  ];
  const legend = [
    '',
    'rows: limit = memcpy of the same bytes into faulted memory (every ratio is against it); eager: SIGBUS to usable =',
    'report to the huge page in place again (read back whole first); vCPU stall = a vCPU thread\'s fault to its access',
    'completing, the longest of the rep; lazy: SIGBUS to in place = report to the replacement in place with the touched',
    'piece filled and the vCPUs released; lazy: whole page usable again = report to every piece in place; naive = the',
    '2024 QEMU RFC\'s approach; burst = each of 8 pages poisoned at once, first report to usable; KVM vCPU stall = the',
    'reference VMM\'s exit that found the poison to KVM_RUN re-entered.',
  ];
  const text = table(results) + '\n' + extra.join('\n') + '\n' + [...scaleTable(scale, fmt), ...migrationTable(migration), ...idleTable(idle)].join('\n') + '\n' + legend.join('\n');
  console.log(text);
  fs.mkdirSync(OUT, { recursive: true });
  fs.writeFileSync(path.join(OUT, 'results.json'), JSON.stringify({ date: new Date().toISOString(), vcpus, results, burst, kvm, scale, migration, idle }, null, 2));
  const panels = results
    .filter((r) => !r.skipped)
    .map((r) => ({ title: `${r.pageSize} huge page: stalls and recovery latency (log scale, ${r.reps} reps; dots = reps, bar = median)`, series: r.rows }));
  fs.writeFileSync(path.join(OUT, 'latency.svg'), svg(panels));
  fs.writeFileSync(path.join(OUT, 'table.md'), text + '\n');
  console.log(`wrote ${path.join(OUT, 'results.json')}, latency.svg, table.md`);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
