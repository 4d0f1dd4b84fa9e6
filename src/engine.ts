// The engine: the facade a VMM holds. It owns regions, the policy, the ledger, the journal and the
// events; the native worker thread does the recovery the policy armed, and the pipeline (src/pipeline/)
// dispatches its events, records losses, replays the journal, sizes the reserve and resets.
import { checkUint, invalidArg, outOfRange, RasError } from './errors';
import { RasEvents, type ResetEvent } from './events';
import { hwpoisonIsUsable, hwpoisonUnavailable, uffdInfo, uffdUnavailable } from './guards';
import { Journal } from './ledger/file';
import { Ledger, type LostPage } from './ledger/ledger';
import type { JournalReplay } from './ledger/records';
import { native, type NativeEvent } from './native';
import { checkEngineOptions, checkKeys, type EngineOptions, type InjectOptions } from './options';
import { chooseGuard, kernelReadsAroundPoison, type Guard } from './policy';
import { Region, type RegionSpec, type RegionUser } from './region';
import { dispatch, routeEvent } from './pipeline/dispatch';
import { attach, attached, detach } from './pipeline/engines';
import { abortHandover, checkNotHandedOver, prepareHandover, type HandoverResult } from './pipeline/handover';
import { carryOver, reportBadRecords } from './pipeline/replay';
import { mapRegion } from './pipeline/map';
import { injectPoison } from './pipeline/inject';
import { exportLost } from './migration/export';
import { importLost } from './migration/import';
import type { ImportResult, LostManifest } from './migration/manifest';
import { applyReserve, reserveWish, type ReserveWish } from './pipeline/reserve';
import { resetRegion } from './pipeline/reset';
import { finishInFlight, unmapAndRecord } from './pipeline/close';
import { DurableLog } from './pipeline/durable';
import { Idle } from './pipeline/idle';
import type { EngineState } from './pipeline/state';
import { engineStats, type EngineStats } from './pipeline/stats';
export type { EngineStats } from './pipeline/stats';
import { openOutputs, type Outputs } from './outputs';

/** The longest delay a Node timer keeps (a longer one fires after 1 ms). */
const MAX_TIMER_MS = 2 ** 31 - 1;

export class RasEngine extends RasEvents {
  private closed = false;
  private readonly regions = new Map<number, Region>();
  private readonly ledger = new Ledger();
  private readonly state: EngineState;
  private readonly journal: Journal | undefined;
  private readonly replay: JournalReplay | undefined;
  private readonly guard: Guard;
  private readonly readsAround: boolean;
  private readonly reserveOption: number | 'auto';
  private readonly reserveDepths: EngineOptions['reserve'];
  private readonly users = new Set<RegionUser>();
  private readonly durable: DurableLog;
  private readonly idle = new Idle();
  private outputs: Outputs | undefined;

  private constructor(opts: EngineOptions, journal?: { journal: Journal; replay: JournalReplay }) {
    super();
    this.journal = journal?.journal;
    this.replay = journal?.replay;
    this.guard = chooseGuard(opts.lostPageGuard ?? 'auto', uffdInfo().kind !== 'none', hwpoisonIsUsable());
    this.readsAround = opts.kernelReadsAroundPoison ?? kernelReadsAroundPoison();
    this.reserveOption = opts.reserveBytes ?? 'auto';
    this.reserveDepths = opts.reserve;
    this.durable = new DurableLog(this.journal, this);
    this.state = {
      regions: this.regions,
      ledger: this.ledger,
      journal: this.journal,
      replay: this.replay,
      events: this,
      guard: this.guard,
      durable: this.durable,
      idle: this.idle,
      handover: { id: undefined, handedOverHugePages: 0, stale: [] },
    };
  }

  /** Opens the engine: installs the signal handlers and starts the recovery thread. */
  static open(options: EngineOptions = {}): RasEngine {
    const guard = checkEngineOptions(options);
    if (guard === 'hwpoison' && !hwpoisonIsUsable()) throw hwpoisonUnavailable("use lostPageGuard 'guard' or 'auto'");
    if (guard === 'uffd' && uffdInfo().kind === 'none') throw uffdUnavailable();
    const journal = options.journalPath !== undefined ? Journal.open(options.journalPath) : undefined;
    try {
      // Before init: the reader threads start with the recovery lanes.
      if (options.readThreads !== undefined && attached().size === 0) native.setReadThreads(options.readThreads);
      native.init(dispatch);
    } catch (err) {
      journal?.journal.close(); // and its lock: a failed open must not hold the journal
      throw err;
    }
    native.setLazyRecovery(options.lazyRecovery ?? true); // process-wide: the last open() decides
    const engine = new RasEngine(options, journal);
    attach(engine);
    applyReserve();
    reportBadRecords(engine.state);
    try {
      engine.outputs = openOutputs(engine, options); // metrics file, event log, status socket
    } catch (err) {
      engine.close();
      throw err;
    }
    return engine;
  }

  /** The journal's state when the engine opened (warnings about torn records, lost frames). */
  get journalReplay(): JournalReplay | undefined {
    return this.replay;
  }

  get lostPageGuard(): Guard {
    return this.guard;
  }

  /**
   * The address of the engine's C API table (`struct hugetlb_ras_api`, include/hugetlb_ras.h), for a
   * VMM's native vCPU loop: what is at this address or GPA, and which frames were lost. Valid for
   * the life of the process.
   */
  nativeApi(): bigint {
    this.checkOpen();
    return native.nativeApi();
  }

  mapRegion(spec: RegionSpec): Region {
    this.checkOpen();
    const elsewhere = [...attached()].filter((e) => e !== this).flatMap((e) => [...e.mappedRegions()]);
    return mapRegion(this.state, spec, elsewhere, this.readsAround, (r) => this.regions.set(r.id, r));
  }

  /**
   * The lost-frame manifest of every region this engine maps (src/migration/): what a VMM puts in its
   * migration stream or beside its snapshot. Plain JSON (no bigint).
   */
  exportLost(): LostManifest {
    this.checkOpen();
    return exportLost(this.regions.values(), this.ledger);
  }

  /**
   * On a migration destination, after mapRegion and before the guest runs: makes the manifest's
   * frames lost here (journaled first, cause 'imported'). All or nothing: ERR_BAD_MANIFEST changes nothing.
   */
  importLost(manifest: unknown): ImportResult {
    this.checkOpen();
    checkNotHandedOver(this.state, 'importLost');
    return importLost(this.state, manifest);
  }

  /** Unmaps a region (its lost pages are forgotten by the ledger, not by the journal). */
  unmapRegion(region: Region): void {
    this.ownRegion(region);
    // vCPU threads on it first (they may wait for a paused engine): else they touch unmapped memory.
    for (const user of [...this.users]) if (user.region === region) user.stopNow();
    finishInFlight(this.state); // a recovery in flight on it is finished or recorded, as by close()
    carryOver(this.state, region); // a later mapRegion of it applies this life's losses and split pages
    unmapAndRecord(this.state, region); // and a loss captured after the drain, before the unmap
    region.closed = true;
    this.regions.delete(region.id);
    this.ledger.forget(region.name);
  }

  injectPoison(region: Region, offset: number, options: InjectOptions = {}): { mode: 'madvise' | 'simulate'; hostAddress: bigint } {
    this.ownRegion(region);
    return injectPoison(region, offset, options);
  }

  /** Holds the processing of reports (they are still captured) until resume(). */
  pause(): void {
    this.checkOpen();
    native.pause(true);
  }

  resume(): void {
    this.checkOpen();
    native.pause(false);
  }

  /**
   * Resolves when every captured report has been handled and its events delivered (resolved from the
   * delivery of the last event, not by polling). `timeoutMs`: rejects with `ERR_TIMEOUT` after that long.
   */
  async whenIdle(options: { timeoutMs?: number } = {}): Promise<void> {
    if (typeof options !== 'object' || options === null) throw invalidArg('options must be an object');
    checkKeys(options, 'whenIdle');
    const timeoutMs = options.timeoutMs === undefined ? undefined : checkUint(options.timeoutMs, 'timeoutMs');
    if (this.closed) return;
    // Node fires a timer past 2^31-1 ms (24.8 days) after 1 ms: such a timeout waits without one.
    return this.idle.wait(timeoutMs !== undefined && timeoutMs > MAX_TIMER_MS ? undefined : timeoutMs);
  }

  lostPages(): LostPage[] {
    return this.ledger.all();
  }

  /** Guest reset: give huge pages back where the region was split or lost. */
  async resetRegion(region: Region): Promise<ResetEvent> {
    this.ownRegion(region);
    return resetRegion(this.state, region, () => this.whenIdle());
  }

  /**
   * Live update: with the vCPUs paused, writes every split huge page's current data into its file
   * (pipeline/handover.ts) and journals it, so the successor that maps the files sees it as current.
   * The engine is handed over from then on: the guest must not run in this process until close().
   */
  async prepareHandover(): Promise<HandoverResult> {
    this.checkOpen();
    return prepareHandover(this.state, () => this.whenIdle());
  }

  /** The update was called off: journals the handover void, so the guest may run here again. */
  abortHandover(): void {
    this.checkOpen();
    abortHandover(this.state);
  }

  stats(): EngineStats {
    this.checkOpen();
    return engineStats(this.state, this.journal ? { path: this.journal.path, ...this.durable.stats() } : undefined);
  }

  /** Share of a huge page's range still mapped with 2 MiB pages (THP), from /proc/self/smaps. */
  hugeMappedShare(region: Region, hugePageIndex: number): number {
    this.ownRegion(region);
    checkUint(hugePageIndex, 'hugePageIndex');
    if (hugePageIndex >= region.hugePages) throw outOfRange('hugePageIndex outside the region');
    return native.hugeMappedShare(region.id, hugePageIndex);
  }

  /**
   * Finishes or records every recovery in flight (pipeline/close.ts: bounded by CLOSE_DRAIN_MS), then
   * unmaps every region, stops the threads and restores the signal handlers. Idempotent.
   */
  close(): void {
    if (this.closed) return;
    this.outputs?.close();
    for (const user of [...this.users]) user.stopNow();
    finishInFlight(this.state);
    for (const r of this.regions.values()) {
      unmapAndRecord(this.state, r); // records a loss captured after the drain, before the unmap
      r.closed = true;
    }
    this.regions.clear();
    this.closed = true;
    detach(this);
    if (attached().size > 0) applyReserve();
    native.shutdown();
    this.durable.close();
    this.journal?.close();
    this.idle.closeAll();
  }

  /** @internal What the output options opened (tests wait on the metrics file and the socket). */
  get outputsOpened(): Outputs | undefined {
    return this.outputs;
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** @internal Routes one native event; false if the region is not this engine's. */
  handleNativeEvent(e: NativeEvent): boolean {
    return routeEvent(this.state, e);
  }

  /** @internal */
  mappedRegions(): Iterable<Region> {
    return this.regions.values();
  }

  /** @internal A batch of `n` native events has been handled (dispatch): wake whenIdle() if that was the last. */
  batchDelivered(n: number): void {
    if (!this.closed) this.idle.check(n);
  }

  /** @internal The reserve this engine would like (pipeline/reserve.ts). */
  reserveWish(): ReserveWish {
    if (this.closed) return new Map();
    return reserveWish(this.reserveOption, this.reserveDepths, this.regions.values());
  }

  /** @internal Native threads on one of this engine's regions: stopped before it is unmapped. */
  addRegionUser(user: RegionUser): void {
    this.users.add(user);
  }

  /** @internal */
  removeRegionUser(user: RegionUser): void {
    this.users.delete(user);
  }

  private checkOpen(): void {
    if (this.closed) throw new RasError('ERR_ENGINE_CLOSED', 'the engine is closed');
  }

  /** @internal Throws unless the region is mapped by this (open) engine. */
  ownRegion(region: Region): void {
    this.checkOpen();
    if (!(region instanceof Region) || this.regions.get(region.id) !== region) {
      if (region instanceof Region && region.closed) throw new RasError('ERR_REGION_CLOSED', `region ${region.name} is unmapped`);
      throw invalidArg('region must be a region mapped by this engine');
    }
  }
}
