// `hugetlb-ras/metrics`: the engine's Prometheus metrics, registered in a prom-client registry the VMM
// owns (registerMetrics), or written for node_exporter's textfile collector (textfile.ts, the engine's
// `metrics` option). Counters follow the engine's events (outcomes.ts); gauges read stats() when the
// registry is collected. Labels are bounded: region name, page size, kind, outcome; never an address.
import type { Registry } from 'prom-client';
import type { RasEngine } from '../engine';
import { invalidArg } from '../errors';
import { checkKeys } from '../keys';
import { sizeLabel, version } from './labels';
import { OUTCOMES, trackOutcomes, type OutcomeRecord } from './outcomes';

export { OUTCOMES, type Outcome, type ErrorKind } from './outcomes';

export interface MetricsOptions {
  /** The registry to register in (default: prom-client's global `register`). */
  registry?: Registry;
}

export interface RasMetrics {
  readonly registry: Registry;
  /** Called after every change the metrics saw (an outcome); the textfile writer listens here. */
  onChange: (() => void) | undefined;
  /** Removes the metrics from the registry and stops following the engine. Idempotent. */
  unregister(): void;
}

/** Seconds buckets for recovery and stall times: 50 us to 10 s. */
export const DURATION_BUCKETS = [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10];

/** The metric names (a test and the README table check against these). */
export const METRIC_NAMES = [
  'hugetlb_ras_memory_errors_total',
  'hugetlb_ras_lost_bytes_total',
  'hugetlb_ras_lost_bytes',
  'hugetlb_ras_lost_huge_pages',
  'hugetlb_ras_recovery_duration_seconds',
  'hugetlb_ras_vcpu_stall_seconds',
  'hugetlb_ras_reserve_bytes',
  'hugetlb_ras_reserve_target_bytes',
  'hugetlb_ras_journal_write_failures_total',
  'hugetlb_ras_journal_not_durable_losses',
  'hugetlb_ras_lanes_busy',
  'hugetlb_ras_info',
] as const;

/** prom-client, loaded when metrics are first asked for. */
export function promClient(): typeof import('prom-client') {
  return require('prom-client') as typeof import('prom-client');
}

export function registerMetrics(engine: RasEngine, options: MetricsOptions = {}): RasMetrics {
  if (typeof options !== 'object' || options === null) throw invalidArg('options must be an object');
  checkKeys(options, 'registerMetrics');
  // Loaded on first use: prom-client costs a VMM that asks for no metrics nothing.
  const { Counter, Gauge, Histogram, register } = promClient();
  const registry = options.registry ?? register;
  const registers = [registry];
  const stats = () => (engine.isClosed ? undefined : engine.stats());
  const errors = new Counter({
    name: 'hugetlb_ras_memory_errors_total',
    help: 'Memory errors in guest memory, by region, report kind (AR action required, AO action optional, unknown: read from the journal) and outcome',
    labelNames: ['region', 'kind', 'outcome'],
    registers,
    collect() {
      // Each region's series exist from its mapping on at 0, so rate() and increase() see the first error.
      for (const r of stats()?.regions ?? [])
        for (const outcome of OUTCOMES)
          for (const kind of outcome === 'imported' ? ['unknown'] : ['AR', 'AO']) this.inc({ region: r.name, kind, outcome }, 0);
    },
  });
  const lostBytesTotal = new Counter({
    name: 'hugetlb_ras_lost_bytes_total',
    help: 'Bytes of guest memory lost since the engine opened (4 KiB per recovered frame, the whole huge page when refused), journal imports included',
    labelNames: ['region', 'outcome'],
    registers,
  });
  const recovery = new Histogram({
    name: 'hugetlb_ras_recovery_duration_seconds',
    help: 'From the first report of a poisoned huge page to the whole page back in place (monotonic clock)',
    labelNames: ['region', 'page_size'],
    buckets: DURATION_BUCKETS,
    registers,
  });
  const stall = new Histogram({
    name: 'hugetlb_ras_vcpu_stall_seconds',
    help: 'From the first report of a poisoned huge page to the vCPUs released (monotonic clock; equals the recovery time on the eager path)',
    labelNames: ['region', 'page_size'],
    buckets: DURATION_BUCKETS,
    registers,
  });
  const metrics: RasMetrics = { registry, onChange: undefined, unregister };
  const tracker = trackOutcomes(engine, (r: OutcomeRecord) => {
    errors.inc({ region: r.region, kind: r.kind, outcome: r.outcome });
    const lost = r.frames.length * r.frameSize;
    if (lost > 0) lostBytesTotal.inc({ region: r.region, outcome: r.outcome }, lost);
    const labels = { region: r.region, page_size: sizeLabel(r.pageSize) };
    if (r.durationNs !== undefined) recovery.observe(labels, Number(r.durationNs) / 1e9);
    if (r.stallNs !== undefined) stall.observe(labels, Number(r.stallNs) / 1e9);
    metrics.onChange?.();
  });
  new Gauge({
    name: 'hugetlb_ras_lost_bytes',
    help: 'Bytes of guest memory lost now (the ledger: a guest reset gives them back), by region',
    labelNames: ['region'],
    registers,
    collect() {
      this.reset();
      const s = stats();
      if (!s) return;
      for (const r of s.regions) this.set({ region: r.name }, 0);
      for (const p of engine.lostPages()) this.inc({ region: p.region }, p.size);
    },
  });
  new Gauge({
    name: 'hugetlb_ras_lost_huge_pages',
    help: 'Huge pages no longer whole now: split into 4 KiB pages around a lost frame, or lost whole (refused)',
    labelNames: ['region', 'page_size', 'state'],
    registers,
    collect() {
      this.reset();
      for (const r of stats()?.regions ?? []) {
        this.set({ region: r.name, page_size: sizeLabel(r.hugePageSize), state: 'split' }, r.splitHugePages);
        this.set({ region: r.name, page_size: sizeLabel(r.hugePageSize), state: 'lost' }, r.lostHugePages);
      }
    },
  });
  new Gauge({
    name: 'hugetlb_ras_reserve_bytes',
    help: 'Pre-faulted replacement memory held now (RAM it costs)',
    registers,
    collect() {
      const s = stats();
      if (s) this.set(s.reserveBytes);
    },
  });
  new Gauge({
    name: 'hugetlb_ras_reserve_target_bytes',
    help: 'Pre-faulted replacement memory the reserve pools want in all',
    registers,
    collect() {
      const s = stats();
      if (s) this.set(s.reserveTarget);
    },
  });
  let failuresSeen = 0;
  new Counter({
    name: 'hugetlb_ras_journal_write_failures_total',
    help: 'Appends of lost frames to the journal that failed (each was reported as an error event and retried)',
    registers,
    collect() {
      const n = stats()?.journal?.failedWrites ?? failuresSeen;
      if (n > failuresSeen) this.inc(n - failuresSeen);
      failuresSeen = n;
    },
  });
  new Gauge({
    name: 'hugetlb_ras_journal_not_durable_losses',
    help: 'Lost frames the journal does not hold yet (the engine retries the write); 0 without a journal',
    registers,
    collect() {
      const s = stats();
      if (s) this.set(s.journal?.notDurable ?? 0);
    },
  });
  new Gauge({
    name: 'hugetlb_ras_lanes_busy',
    help: 'Recovery lanes working now (one for 2 MiB pages, one for 1 GiB pages): huge pages reported and not yet recovered or refused',
    labelNames: ['page_size'],
    registers,
    collect() {
      this.reset();
      for (const r of stats()?.regions ?? []) this.set({ page_size: sizeLabel(r.hugePageSize) }, 0);
      for (const [size, n] of tracker.inProgress()) this.set({ page_size: sizeLabel(size) }, n > 0 ? 1 : 0);
    },
  });
  new Gauge({
    name: 'hugetlb_ras_info',
    help: 'The engine: package version, lost-page guard and recovery path (always 1)',
    labelNames: ['version', 'guard', 'recovery_path'],
    registers,
    collect() {
      this.reset();
      const s = stats();
      if (s) this.set({ version: version(), guard: s.guard, recovery_path: s.recovery.path }, 1);
    },
  });
  let done = false;
  function unregister(): void {
    if (done) return;
    done = true;
    tracker.dispose();
    for (const name of METRIC_NAMES) registry.removeSingleMetric(name);
  }
  return metrics;
}
