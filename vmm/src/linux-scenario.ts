// One run of the Linux guest with poison under its walker, summarised for assertions (the lab case
// and the demo): boot to the walker's first heartbeat, then for each report kind poison one frame
// the walker holds, let the engine recover the huge page and the guest kernel handle the machine
// check, wait for heartbeats after it, then stop the guest and check it shut down cleanly.
import type { InjectMode } from '../../src/index';
import { LinuxGuest, type LinuxGuestOptions, type LinuxInjection, type LinuxVmStats, type WalkerSigbus } from './linux';

export interface LinuxScenarioOptions extends LinuxGuestOptions {
  /** How the host poisons the frame: madvise (real, the lab) or simulate. */
  mode: InjectMode;
  /** AR: the walker touches the lost frame, the VMM injects on that access. AO: the VMM injects an
   * action-optional report as soon as the engine names the lost frame, before the walker gets to it. */
  reports?: ('AR' | 'AO')[];
  heartbeatsAfter?: number;
  bootTimeoutMs?: number;
  stepTimeoutMs?: number;
}

export interface LinuxReportResult {
  kind: 'AR' | 'AO';
  gpa: string;
  pfn: string;
  /** The guest kernel's own lines about this pfn (mce:, Memory failure:). */
  kernelLines: string[];
  walker?: WalkerSigbus;
  injections: LinuxInjection[];
  /** From the poison to the guest's "recovery action" line. */
  ms: number;
  /** When that was (ms since the guest started). */
  handledAt: number;
  heartbeatsAfter: number;
}

export interface LinuxScenarioResult {
  ok: boolean;
  failures: string[];
  /** Wall clock from VM start to the walker's first heartbeat (boot to user space and fill). */
  bootMs: number;
  totalMs: number;
  reports: LinuxReportResult[];
  heartbeats: number;
  wrongBytes: number;
  bye?: { passes: number; wrong: number; lost: number };
  exit?: { state: string; ms: number };
  stats?: LinuxVmStats;
  info?: ReturnType<LinuxGuest['info']>;
  errors: string[];
  walkerSetup: string[];
  consoleTail: string[];
  /** CPUs the guest has online (init's "CPUs online N", from /proc/cpuinfo), -1 when it did not say. */
  guestCpus: number;
  /** Per walker worker: the CPU it ran on and its heartbeats after the first report. */
  workers: { worker: number; cpus: number[]; heartbeats: number; wrong: number }[];
  /** Machine checks that were not delivered as such (deferred, broadcast pieces, merged, shutdown). */
  mceOutcomes: { cpu: number; gpa: string; kind: string; verdict: string }[];
  /** The guest kernel's machine-check and memory-failure lines, and the walker's SIGBUS and bye lines. */
  guestLines: string[];
}

const hex = (v: bigint) => '0x' + v.toString(16);

export async function runLinuxScenario(o: LinuxScenarioOptions): Promise<LinuxScenarioResult> {
  const t0 = Date.now();
  const failures: string[] = [];
  const reports: LinuxReportResult[] = [];
  const bootTimeout = o.bootTimeoutMs ?? 180_000;
  const stepTimeout = o.stepTimeoutMs ?? 60_000;
  const after = o.heartbeatsAfter ?? 2;
  const g = LinuxGuest.open(o);
  const say = o.onLine ?? (() => {});
  let bootMs = -1;
  let stats: LinuxVmStats | undefined;
  const info = g.info();
  try {
    g.start();
    await g.waitFor('the walker to fill its memory and report its first heartbeat', () => g.heartbeats.length >= 1 && g.targets.length >= 3, bootTimeout);
    bootMs = Date.now() - t0;
    say('vmm', `guest up: first heartbeat after ${(bootMs / 1000).toFixed(1)} s`);
    const kinds = o.reports ?? ['AR', 'AO'];
    // Each report under another walker worker where there are several (the SMP guest: another CPU).
    const workerOf = (name: string) => Number(/(\d+)$/.exec(name)?.[1] ?? 0);
    // And never in a huge page an earlier report already split (the second poison would land in
    // the engine's replacement memory, not in a huge page: a different report).
    const usedWorkers: number[] = [];
    const usedPages: bigint[] = [];
    for (const [i, kind] of kinds.entries()) {
      const ok = g.targets.filter((x) => !usedPages.includes(x.gpa >> 21n));
      const fresh = ok.filter((x) => !usedWorkers.includes(workerOf(x.name)));
      const tg = fresh.length ? fresh[0] : ok.length ? ok[0] : g.targets[i % g.targets.length];
      usedWorkers.push(workerOf(tg.name));
      usedPages.push(tg.gpa >> 21n);
      if (!tg.pfn) {
        failures.push(`walker target ${tg.name} has no pfn`);
        continue;
      }
      const pfn = hex(tg.pfn);
      // Right after a heartbeat the walker sleeps: an AO report has the frame to itself.
      const hb = g.heartbeats.length;
      await g.waitFor('a heartbeat', () => g.heartbeats.length > hb, stepTimeout);
      const tp = Date.now();
      g.poison(tg.gpa, o.mode);
      await g.engine.whenIdle({ timeoutMs: stepTimeout });
      if (kind === 'AO') {
        const rec = g.recovered.find((r) => r.lostGuestPhysAddrs.includes(tg.gpa));
        if (!rec) failures.push(`${kind}: the engine did not report ${hex(tg.gpa)} lost`);
        say('vmm', `the engine lost ${hex(tg.gpa)}: injecting an action-optional machine check before the guest touches it`);
        g.injectMce(tg.gpa, false);
      }
      const handled = () => g.kernelLinesFor(tg.pfn).some((l) => / recovery action for /.test(l));
      const walked = () => g.sigbus.some((s) => s.pfn === tg.pfn);
      let ms = -1;
      let handledAt = Infinity; // ms since the guest started, as heartbeats count time
      try {
        await g.waitFor(`the guest's memory-failure handling of pfn ${pfn}`, () => handled() && walked(), stepTimeout);
        ms = Date.now() - tp;
        handledAt = Date.now() - g.t0;
        const n = g.heartbeats.length;
        await g.waitFor(`${after} heartbeats after the machine check`, () => g.heartbeats.length >= n + after, stepTimeout);
      } catch (e) {
        failures.push(`${kind}: ${(e as Error).message}`);
      }
      const r: LinuxReportResult = {
        kind,
        gpa: hex(tg.gpa),
        pfn,
        kernelLines: g.kernelLinesFor(tg.pfn),
        walker: g.sigbus.find((s) => s.pfn === tg.pfn),
        injections: g.injections.filter((x) => x.gpa === tg.gpa),
        ms,
        heartbeatsAfter: 0,
        handledAt,
      };
      reports.push(r);
      if (!r.kernelLines.some((l) => new RegExp(`^Memory failure: ${pfn}: recovery action for .*: Recovered`).test(l)))
        failures.push(`${kind}: no "Memory failure: ${pfn}: recovery action ...: Recovered" from the guest kernel`);
      // An EFAULT that names no address (a guard KVM cannot resolve, no KVM_EXIT_MEMORY_FAULT) ties
      // the frame to no access: the VMM reports it action-optional, and the guest kills early.
      const untied = r.injections.length === 1 && r.injections[0].path === 'next-lost';
      const ar = kind === 'AR' && !untied;
      const want = ar ? 'BUS_MCEERR_AR' : 'BUS_MCEERR_AO';
      if (r.walker?.kind !== want) failures.push(`${kind}: the walker got ${r.walker ? r.walker.kind : 'no SIGBUS'} for pfn ${pfn}, expected ${want}`);
      if (r.injections.length !== 1) failures.push(`${kind}: ${r.injections.length} machine checks injected for ${r.gpa}, expected 1`);
      else if (r.injections[0].ar !== ar) failures.push(`${kind}: the machine check injected was ${r.injections[0].ar ? 'AR' : 'AO'}`);
    }
  } catch (e) {
    failures.push((e as Error).message);
  } finally {
    stats = await g.stop();
    g.close();
  }
  // Heartbeats after each report, to the end of the run (the walker went on verifying everything).
  for (const r of reports) r.heartbeatsAfter = g.heartbeats.filter((h) => h.ms > r.handledAt).length;
  const wrongBytes = g.heartbeats.reduce((a, h) => a + h.wrong, 0) + (g.bye?.wrong ?? 0);
  const targets = new Set(reports.map((r) => r.gpa));
  const stray = g.injections.filter((x) => !targets.has(hex(x.gpa)));
  if (stray.length) failures.push(`machine checks for frames nobody poisoned: ${stray.map((x) => hex(x.gpa)).join(' ')}`);
  if (wrongBytes) failures.push(`the walker found ${wrongBytes} wrong bytes`);
  if (!g.bye) failures.push('the walker never said bye');
  if (g.exit?.state !== 'reset') failures.push(`the guest ended with ${g.exit?.state ?? 'nothing'}, expected its own reset (reboot=k)`);
  const bad = g.console.filter((l) => /Kernel panic|BUG: |Oops|general protection|WARNING: CPU/.test(l.text)).map((l) => l.text);
  if (bad.length) failures.push(`the guest kernel complained: ${bad.slice(0, 3).join(' | ')}`);
  failures.push(...g.errors);
  const setup = g.console.map((l) => l.text).filter((t) => /walker: (filled|target|PR_MCE|ioperm)|init: user space|smp: Brought up|sched_setaffinity/.test(t));
  // init's own line (the kernel's "smp: Brought up" is below loglevel 5).
  const smp = g.console.map((l) => /init: user space up .*CPUs online (\d+)/.exec(l.text) ?? /smp: Brought up \d+ nodes?, (\d+) CPUs?/.exec(l.text)).find((m) => m);
  const guestCpus = smp ? Number(smp[1]) : -1;
  if ((o.vcpus ?? 1) > 1 && guestCpus !== o.vcpus) failures.push(`the guest brought up ${guestCpus} CPUs, expected ${o.vcpus}`);
  const byWorker = new Map<number, { worker: number; cpus: number[]; heartbeats: number; wrong: number }>();
  for (const h of g.heartbeats) {
    const w = byWorker.get(h.worker) ?? { worker: h.worker, cpus: [], heartbeats: 0, wrong: 0 };
    if (!w.cpus.includes(h.cpu)) w.cpus.push(h.cpu);
    w.heartbeats++;
    w.wrong += h.wrong;
    byWorker.set(h.worker, w);
  }
  const workers = [...byWorker.values()].sort((a, b) => a.worker - b.worker);
  const guestLines = g.console.map((l) => l.text).filter((t) => /mce: |Memory failure: |walker: (SIGBUS|bye|worker \d+ done)|smp: Brought up|init: user space|Kernel panic|Timeout: /.test(t));
  return {
    ok: failures.length === 0,
    failures,
    bootMs,
    totalMs: Date.now() - t0,
    reports,
    heartbeats: g.heartbeats.length,
    wrongBytes,
    bye: g.bye,
    exit: g.exit,
    stats,
    info,
    errors: g.errors,
    walkerSetup: setup,
    consoleTail: g.console.slice(-40).map((l) => l.text),
    guestCpus,
    workers,
    mceOutcomes: g.mceOutcomes.map((x) => ({ cpu: x.cpu, gpa: hex(x.gpa), kind: x.kind, verdict: x.verdict })),
    guestLines,
  };
}
