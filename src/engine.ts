// The engine: the facade a VMM holds. It owns regions, the policy, the ledger, the journal and the
// events; the native worker thread does the recovery the policy armed, and the pipeline (src/pipeline/)
// dispatches its events, records losses, replays the journal, sizes the reserve and resets.
import * as fs from 'node:fs';
import { checkUint, invalidArg, outOfRange, RasError } from './errors';
import { RasEvents, type ResetEvent } from './events';
import { hwpoisonIsUsable, hwpoisonUnavailable } from './hwpoison';
import { Journal } from './ledger/file';
import { Ledger, type LostPage } from './ledger/ledger';
import type { JournalReplay } from './ledger/records';
import { native, PageState, type NativeEvent } from './native';
import { checkEngineOptions, checkInjectOptions, checkRegionSpec, type EngineOptions, type InjectOptions } from './options';
import { chooseGuard, ineligibleReason, kernelReadsAroundPoison, reasonCode } from './policy';
import { Region, type RegionSpec, type RegionUser } from './region';
import { dispatch, routeEvent } from './pipeline/dispatch';
import { attach, attached, detach } from './pipeline/engines';
import { reprotectFromJournal } from './pipeline/replay';
import { applyReserve, reserveWish } from './pipeline/reserve';
import { resetRegion } from './pipeline/reset';
import type { EngineState } from './pipeline/state';

export interface EngineStats {
  reserveBytes: number;
  reserveTarget: number;
  guard: 'hwpoison' | 'guard';
  reports: { captured: number; processed: number; overflow: number };
  regions: {
    name: string;
    hugePageSize: number;
    hugePages: number;
    splitHugePages: number;
    lostHugePages: number;
    lostSubpages: number;
    bookkeepingBytes: number;
  }[];
}

export class RasEngine extends RasEvents {
  private closed = false;
  private readonly regions = new Map<number, Region>();
  private readonly ledger = new Ledger();
  private readonly state: EngineState;
  private readonly journal: Journal | undefined;
  private readonly replay: JournalReplay | undefined;
  private readonly guard: 'hwpoison' | 'guard';
  private readonly readsAround: boolean;
  private readonly reserveOption: number | 'auto';
  private readonly users = new Set<RegionUser>();

  private constructor(opts: EngineOptions, journal?: { journal: Journal; replay: JournalReplay }) {
    super();
    this.journal = journal?.journal;
    this.replay = journal?.replay;
    this.guard = chooseGuard(opts.lostPageGuard ?? 'auto', hwpoisonIsUsable());
    this.readsAround = opts.kernelReadsAroundPoison ?? kernelReadsAroundPoison();
    this.reserveOption = opts.reserveBytes ?? 'auto';
    this.state = { regions: this.regions, ledger: this.ledger, journal: this.journal, replay: this.replay, events: this };
  }

  /** Opens the engine: installs the signal handlers and starts the recovery thread. */
  static open(options: EngineOptions = {}): RasEngine {
    const guard = checkEngineOptions(options);
    if (guard === 'hwpoison' && !hwpoisonIsUsable()) throw hwpoisonUnavailable("use lostPageGuard 'guard' or 'auto'");
    const journal = options.journalPath !== undefined ? Journal.open(options.journalPath) : undefined;
    // Before init: the reader threads start with the recovery lanes.
    if (options.readThreads !== undefined && attached().size === 0) native.setReadThreads(options.readThreads);
    native.init(dispatch);
    const engine = new RasEngine(options, journal);
    attach(engine);
    applyReserve();
    return engine;
  }

  /** The journal's state when the engine opened (warnings about torn records, lost frames). */
  get journalReplay(): JournalReplay | undefined {
    return this.replay;
  }

  get lostPageGuard(): 'hwpoison' | 'guard' {
    return this.guard;
  }

  mapRegion(spec: RegionSpec): Region {
    this.checkOpen();
    const s = checkRegionSpec(spec, [...this.regions.values()]);
    const mapped = native.mapRegion(s.path, s.size, s.offset);
    const reason = ineligibleReason({ share: s.share, consumers: s.consumers, kernelReadsAround: this.readsAround });
    const region = new Region(
      mapped.id,
      s.name,
      s.path,
      mapped.address,
      s.size,
      s.offset,
      mapped.hugePageSize,
      s.guestPhysAddr,
      s.share,
      s.consumers,
      reason,
      mapped.bookkeepingBytes,
      `${mapped.dev}:${mapped.ino}`,
    );
    try {
      this.journal?.checkRegion({
        name: s.name,
        path: s.path,
        size: s.size,
        offset: s.offset,
        guestPhysAddr: s.guestPhysAddr,
        hugePageSize: mapped.hugePageSize,
      });
    } catch (err) {
      native.unmapRegion(mapped.id);
      if (mapped.created) fs.rmSync(s.path, { force: true });
      else if (fs.statSync(s.path).size > mapped.originalSize) fs.truncateSync(s.path, mapped.originalSize);
      throw err;
    }
    native.setPolicy(mapped.id, reasonCode(reason), this.guard === 'hwpoison');
    this.regions.set(mapped.id, region);
    applyReserve();
    reprotectFromJournal(this.state, region);
    return region;
  }

  /** Unmaps a region (its lost pages are forgotten by the ledger, not by the journal). */
  unmapRegion(region: Region): void {
    this.ownRegion(region);
    // vCPU threads on it first (they may wait for a paused engine): else they touch unmapped memory.
    for (const user of [...this.users]) if (user.region === region) user.stopNow();
    native.unmapRegion(region.id);
    region.closed = true;
    this.regions.delete(region.id);
    this.ledger.forget(region.name);
  }

  injectPoison(region: Region, offset: number, options: InjectOptions = {}): { mode: 'madvise' | 'simulate'; hostAddress: bigint } {
    this.ownRegion(region);
    region.checkRange(offset, 1);
    const { mode, kind, signal } = checkInjectOptions(options);
    const usable = hwpoisonIsUsable();
    const chosen = mode === 'auto' ? (usable ? 'madvise' : 'simulate') : mode;
    if (chosen === 'madvise') {
      if (!usable) throw hwpoisonUnavailable('needs root and CONFIG_MEMORY_FAILURE');
      if (kind === 'AO' || !signal) throw invalidArg('kind and signal are for simulated poison only');
      return { mode: 'madvise', hostAddress: native.injectMadvise(region.id, offset).hostAddress };
    }
    const r = native.injectSimulated(region.id, offset, kind === 'AO', signal);
    return { mode: 'simulate', hostAddress: r.hostAddress };
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

  /** Resolves when every captured report has been handled and its events emitted. */
  async whenIdle(options: { timeoutMs?: number } = {}): Promise<void> {
    if (typeof options !== 'object' || options === null) throw invalidArg('options must be an object');
    const deadline = options.timeoutMs === undefined ? Infinity : performance.now() + checkUint(options.timeoutMs, 'timeoutMs');
    for (;;) {
      if (this.closed) return;
      const c = native.counters();
      if (c.processed >= c.captured && c.delivered >= c.posted) return;
      if (performance.now() > deadline)
        throw new RasError('ERR_TIMEOUT', c.paused ? 'the engine is paused: reports wait for resume()' : 'reports still being handled');
      await new Promise((r) => setTimeout(r, 1));
    }
  }

  lostPages(): LostPage[] {
    return this.ledger.all();
  }

  /** Guest reset: give huge pages back where the region was split or lost. */
  async resetRegion(region: Region): Promise<ResetEvent> {
    this.ownRegion(region);
    return resetRegion(this.state, region, () => this.whenIdle());
  }

  stats(): EngineStats {
    this.checkOpen();
    const c = native.counters();
    return {
      reserveBytes: c.reserveBytes,
      reserveTarget: c.reserveTarget,
      guard: this.guard,
      reports: { captured: c.captured, processed: c.processed, overflow: c.overflow },
      regions: [...this.regions.values()].map((r) => {
        const states = native.pageStates(r.id);
        return {
          name: r.name,
          hugePageSize: r.hugePageSize,
          hugePages: r.hugePages,
          splitHugePages: states.filter((s) => s === PageState.Split).length,
          lostHugePages: states.filter((s) => s === PageState.Lost).length,
          lostSubpages: native.lostSubpages(r.id).length,
          bookkeepingBytes: r.bookkeepingBytes,
        };
      }),
    };
  }

  /** Share of a huge page's range still mapped with 2 MiB pages (THP), from /proc/self/smaps. */
  hugeMappedShare(region: Region, hugePageIndex: number): number {
    this.ownRegion(region);
    checkUint(hugePageIndex, 'hugePageIndex');
    if (hugePageIndex >= region.hugePages) throw outOfRange('hugePageIndex outside the region');
    return native.hugeMappedShare(region.id, hugePageIndex);
  }

  /** Unmaps every region, stops the threads and restores the signal handlers. Idempotent. */
  close(): void {
    if (this.closed) return;
    for (const user of [...this.users]) user.stopNow();
    for (const r of this.regions.values()) {
      native.unmapRegion(r.id);
      r.closed = true;
    }
    this.regions.clear();
    this.closed = true;
    detach(this);
    if (attached().size > 0) applyReserve();
    native.shutdown();
    this.journal?.close();
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** @internal Routes one native event; false if the region is not this engine's. */
  handleNativeEvent(e: NativeEvent): boolean {
    return routeEvent(this.state, e);
  }

  /** @internal The reserve this engine would like (pipeline/reserve.ts). */
  reserveWish(): number {
    if (this.closed) return 0;
    return reserveWish(this.reserveOption, this.regions.values());
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
