// The engine: the facade a VMM holds. It owns regions, the policy, the ledger, the journal and the
// events; the native worker thread does the recovery the policy armed, and the pipeline (src/pipeline/)
// dispatches its events, records losses, replays the journal, sizes the reserve and resets.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { checkUint, invalidArg, outOfRange, RasError } from './errors';
import { RasEvents, type ResetEvent } from './events';
import { hwpoisonIsUsable, hwpoisonUnavailable, UFFD_ADVICE, uffdInfo, uffdUnavailable } from './guards';
import { Journal } from './ledger/file';
import { Ledger, type LostPage } from './ledger/ledger';
import { identityChange, type JournalReplay, type RegionIdentity } from './ledger/records';
import { bootId } from './ledger/lock';
import { native, PageState, type NativeEvent, type NativeUffdInfo } from './native';
import { checkEngineOptions, checkInjectOptions, checkRegionSpec, type EngineOptions, type InjectOptions } from './options';
import { chooseGuard, GUARD_CODES, ineligibleReason, kernelReadsAroundPoison, KVM_FAULT_GUARD_WARNING, reasonCode, type Guard } from './policy';
import { Region, type RegionSpec, type RegionUser } from './region';
import { dispatch, routeEvent } from './pipeline/dispatch';
import { attach, attached, detach } from './pipeline/engines';
import { reprotectFromJournal } from './pipeline/replay';
import { applyReserve, reserveWish, sizeKey, type ReserveWish } from './pipeline/reserve';
import { resetRegion } from './pipeline/reset';
import { DurableLog, type JournalStats } from './pipeline/durable';
import { Idle } from './pipeline/idle';
import type { EngineState } from './pipeline/state';

export interface EngineStats {
  /** Pre-faulted reserve memory held now (RAM it costs), and what the pools want in all. */
  reserveBytes: number;
  reserveTarget: number;
  /** The reserve per huge page size ('2M', '1G'): blocks wanted, ready, served and missed. */
  reserve: Record<string, { depth: number; ready: number; bytes: number; taken: number; missed: number }>;
  guard: Guard;
  /** Set when `guard` is 'guard': what that means for a KVM guest, and what the VMM must do. */
  kvmWarning?: string;
  /**
   * Which recovery path runs. 'lazy' needs a full userfaultfd (it must see KVM's kernel-mode faults:
   * /dev/userfaultfd access, vm.unprivileged_userfaultfd=1 or CAP_SYS_PTRACE) and Linux >= 6.8
   * (UFFDIO_MOVE), and the 'uffd' guard; else 'eager' (why: `lazyUnavailable`). Counts are per process.
   */
  recovery: {
    path: 'lazy' | 'eager';
    lazyUnavailable?: string;
    lazyRecoveries: number;
    eagerRecoveries: number;
    /** Pieces filled for a waiting thread; 2 MiB chunks moved in whole; chunks collapsed back to 2 MiB. */
    faultFills: number;
    chunkMoves: number;
    collapsed: number;
    /** Pages UFFDIO_MOVE refused (moved by reading them again and UFFDIO_COPY). */
    moveFallbacks: number;
  };
  /** The userfaultfd the engine opened for poison markers ('none': why, and what root can do). */
  userfaultfd: { kind: NativeUffdInfo['kind']; errno?: number; syscall?: string; advice?: string };
  /** stale: reports for a healthy frame of a split page (late KVM reports); the thread retried. */
  reports: { captured: number; processed: number; overflow: number; stale: number };
  /** With a journal: appends that failed, losses it does not hold yet (retried), retries that succeeded. */
  journal?: JournalStats & { path: string };
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

function lazyStats(guard: Guard): EngineStats['recovery'] {
  const l = native.lazyInfo();
  const why = !l.available
    ? `${l.reason} (${l.syscall}: errno ${l.errno})`
    : !l.enabled
      ? 'turned off (lazyRecovery: false)'
      : guard !== 'uffd'
        ? `the lazy path marks lost subpages with userfaultfd poison markers; this engine's guard is '${guard}'`
        : undefined;
  return {
    path: why ? 'eager' : 'lazy',
    ...(why ? { lazyUnavailable: why } : {}),
    lazyRecoveries: l.lazy,
    eagerRecoveries: l.eager,
    faultFills: l.faultFills,
    chunkMoves: l.chunkMoves,
    collapsed: l.collapsed,
    moveFallbacks: l.moveFallbacks,
  };
}

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
    const s = checkRegionSpec(spec, [...this.regions.values()], elsewhere);
    // Decided before the mapping exists: the region goes live with its policy armed.
    const reason = ineligibleReason({ share: s.share, consumers: s.consumers, kernelReadsAround: this.readsAround });
    let mapped: ReturnType<typeof native.mapRegion>;
    try {
      mapped = native.mapRegion(s.path, s.size, s.offset, reasonCode(reason), GUARD_CODES[this.guard], s.guestPhysAddr);
    } catch (err) {
      throw hugePagePoolError(err, s.name, s.path, s.size);
    }
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
      if (this.journal) this.checkIdentity(s.name, s.path, mapped);
    } catch (err) {
      native.unmapRegion(mapped.id);
      if (mapped.created) fs.rmSync(s.path, { force: true });
      else if (fs.statSync(s.path).size > mapped.originalSize) fs.truncateSync(s.path, mapped.originalSize);
      throw err;
    }
    this.regions.set(mapped.id, region);
    applyReserve();
    reprotectFromJournal(this.state, region);
    return region;
  }

  /**
   * The journal's losses of a region apply to this memory only if it is the same memory: the same boot
   * of the host and the same backing file. Else they are history (journalReplay.history).
   */
  private checkIdentity(name: string, file: string, mapped: { dev: number; ino: number }): void {
    let birthMs = 0;
    try {
      birthMs = Math.floor(fs.statSync(file).birthtimeMs);
    } catch {
      /* no birth time: dev and ino only */
    }
    const now: RegionIdentity = { boot: bootId(), dev: mapped.dev, ino: mapped.ino, birthMs };
    const before = this.journal!.noteIdentity(name, now);
    const why = before && identityChange(before, now);
    if (!why || !this.replay) return;
    const kept = this.replay.lost.filter((f) => f.region !== name);
    for (const f of this.replay.lost) if (f.region === name) this.replay.history.push({ ...f, why });
    this.replay.lost.splice(0, this.replay.lost.length, ...kept);
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

  /**
   * Resolves when every captured report has been handled and its events delivered (resolved from the
   * delivery of the last event, not by polling). `timeoutMs`: rejects with `ERR_TIMEOUT` after that long.
   */
  async whenIdle(options: { timeoutMs?: number } = {}): Promise<void> {
    if (typeof options !== 'object' || options === null) throw invalidArg('options must be an object');
    const timeoutMs = options.timeoutMs === undefined ? undefined : checkUint(options.timeoutMs, 'timeoutMs');
    if (this.closed) return;
    return this.idle.wait(timeoutMs);
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
      reserve: Object.fromEntries(
        c.reservePools.map((p) => [sizeKey(p.size), { depth: p.depth, ready: p.ready, bytes: p.ready * p.size, taken: p.taken, missed: p.missed }]),
      ),
      guard: this.guard,
      ...(this.guard === 'guard' ? { kvmWarning: KVM_FAULT_GUARD_WARNING } : {}),
      recovery: lazyStats(this.guard),
      userfaultfd: {
        kind: uffdInfo().kind,
        ...(uffdInfo().kind === 'none' ? { errno: -uffdInfo().errno, syscall: uffdInfo().syscall, advice: UFFD_ADVICE } : {}),
      },
      reports: { captured: c.captured, processed: c.processed, overflow: c.overflow, stale: c.stale },
      ...(this.journal ? { journal: { path: this.journal.path, ...this.durable.stats() } } : {}),
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
    this.durable.close();
    this.journal?.close();
    this.idle.closeAll();
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

/** ENOMEM from mapping hugetlbfs is the huge page pool: say so, with the numbers and the way out. */
function hugePagePoolError(err: unknown, name: string, file: string, size: number): unknown {
  if (!(err instanceof RasError) || err.code !== 'ENOMEM') return err;
  let huge: number;
  try {
    huge = fs.statfsSync(path.dirname(path.resolve(file))).bsize;
  } catch {
    return err;
  }
  const kb = `${huge / 1024}kB`;
  const sys = `/sys/kernel/mm/hugepages/hugepages-${kb}`;
  const read = (f: string): number | undefined => {
    try {
      return Number(fs.readFileSync(`${sys}/${f}`, 'utf8'));
    } catch {
      return undefined;
    }
  };
  const free = read('free_hugepages');
  const total = read('nr_hugepages');
  const needed = size / huge;
  const human = huge >= 2 ** 30 ? `${huge / 2 ** 30} GiB` : `${huge / 2 ** 20} MiB`;
  const env = huge >= 2 ** 30 ? 'HUGETLB_RAS_PAGES_1G' : 'HUGETLB_RAS_PAGES_2M';
  return new RasError(
    'ENOMEM',
    `region ${name}: not enough huge pages of ${human} to map ${file}: it needs ${needed}, the pool has ` +
      `HugePages_Free ${free ?? '?'} of nr_hugepages ${total ?? '?'} (${sys}). Raise the pool as root: ` +
      `${env}=${(total ?? 0) + needed} bash scripts/setup-hugetlbfs.sh (or echo N > ${sys}/nr_hugepages), or map less`,
    {
      errno: (err as { errno?: number }).errno,
      syscall: (err as { syscall?: string }).syscall,
      hugePageSize: huge,
      hugePagesNeeded: needed,
      hugePagesFree: free,
      cause: err,
    },
  );
}
