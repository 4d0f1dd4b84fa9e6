// The engine: owns regions, policy, the ledger, the journal and the events. The native worker
// thread does the recovery the policy armed; this side records, journals and reports.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { checkUint, invalidArg, outOfRange, RasError } from './errors';
import { RasEvents, type LostEvent, type RecoveredEvent, type RefusedEvent, type ResetEvent } from './events';
import { Journal, type JournalReplay, type LostCause, type LostFrame } from './journal';
import { Ledger, type LostPage } from './ledger';
import { native, NativeEventType, PageState, type NativeEvent, type NativeUffdInfo } from './native';
import {
  chooseGuard,
  CONSUMERS,
  GUARD_CODES,
  GUARD_MODES,
  guardFromCode,
  hwpoisonUsable,
  KVM_FAULT_GUARD_WARNING,
  ineligibleReason,
  kernelReadsAroundPoison,
  reasonCode,
  reasonFromCode,
  REASON_WORDS,
  type Consumer,
  type Guard,
  type GuardMode,
  type RefuseReason,
} from './policy';
import { Region, type RegionSpec } from './region';
import type { VcpuLoadHandle } from './vcpu';

const HUGETLBFS_MAGIC = 0x958458f6;
const SUBPAGE = 4096;
const BUS_MCEERR_AO = 5;

export interface EngineOptions {
  /** How lost subpages stay inaccessible (see `Guard`); 'auto': uffd, else hwpoison where permitted, else guard. */
  lostPageGuard?: GuardMode;
  /** Already-faulted replacement memory kept ready; 'auto': one huge page of each size mapped; 0: none. */
  reserveBytes?: number | 'auto';
  /** Durable ledger of lost frames, replayed on open. */
  journalPath?: string;
  /** Override the kernel check (Linux >= 6.5 reads a poisoned huge page back around the bad 4 KiB). */
  kernelReadsAroundPoison?: boolean;
  /** Threads reading a huge page back, per recovery lane (default 2); set by the first engine of the process. */
  readThreads?: number;
}

export type InjectMode = 'madvise' | 'simulate' | 'auto';

export interface InjectOptions {
  mode?: InjectMode;
  /** Simulate only: an action-optional report (found asynchronously) instead of action-required. */
  kind?: 'AR' | 'AO';
  /** Simulate only: false poisons silently, the report comes at the next access (as on Linux 6.1). */
  signal?: boolean;
}

export interface EngineStats {
  reserveBytes: number;
  reserveTarget: number;
  guard: Guard;
  /** Set when `guard` is 'guard': what that means for a KVM guest, and what the VMM must do. */
  kvmWarning?: string;
  /** The userfaultfd the engine opened for poison markers ('none': why, and what root can do). */
  userfaultfd: { kind: NativeUffdInfo['kind']; errno?: number; syscall?: string; advice?: string };
  /** stale: reports for a healthy frame of a split page (late KVM reports); the thread retried. */
  reports: { captured: number; processed: number; overflow: number; stale: number };
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

// One native worker serves the process; its events are routed to the engine owning the region.
const engines = new Set<RasEngine>();
function dispatch(events: NativeEvent[]): void {
  for (const e of events) {
    for (const engine of engines) if (engine.handleNativeEvent(e)) break;
  }
}

let hwpoisonProbeErrno: number | undefined;
function probeHwpoison(): number {
  if (hwpoisonProbeErrno === undefined) hwpoisonProbeErrno = native.hwpoisonProbe();
  return hwpoisonProbeErrno;
}

const UFFD_ADVICE =
  'poison markers need Linux >= 6.6 with CONFIG_USERFAULTFD, and userfaultfd(2) not blocked by seccomp or an LSM ' +
  '(container runtimes block it by default); any user may open the user-mode-only kind that markers need';

function errnoName(errno: number): string {
  const hit = Object.entries(os.constants.errno).find(([, v]) => v === errno);
  return hit ? hit[0] : `errno ${errno}`;
}

export class RasEngine extends RasEvents {
  private closed = false;
  private readonly regions = new Map<number, Region>();
  private readonly ledger = new Ledger();
  private readonly journal: Journal | undefined;
  private readonly replay: JournalReplay | undefined;
  private readonly guard: Guard;
  private readonly uffd: NativeUffdInfo;
  private readonly readsAround: boolean;
  private readonly reserveOption: number | 'auto';
  /** @internal */ readonly vcpuLoads = new Set<VcpuLoadHandle>();

  private constructor(opts: EngineOptions, journal?: { journal: Journal; replay: JournalReplay }) {
    super();
    this.journal = journal?.journal;
    this.replay = journal?.replay;
    this.uffd = native.uffdInfo();
    this.guard = chooseGuard(opts.lostPageGuard ?? 'auto', this.uffd.kind !== 'none', hwpoisonUsable(probeHwpoison()));
    this.readsAround = opts.kernelReadsAroundPoison ?? kernelReadsAroundPoison();
    this.reserveOption = opts.reserveBytes ?? 'auto';
  }

  /** Opens the engine: installs the signal handlers and starts the recovery thread. */
  static open(options: EngineOptions = {}): RasEngine {
    if (typeof options !== 'object' || options === null) throw invalidArg('options must be an object');
    const guard = options.lostPageGuard === undefined ? 'auto' : options.lostPageGuard;
    if (!GUARD_MODES.includes(guard as GuardMode)) throw invalidArg(`lostPageGuard must be one of ${GUARD_MODES.join(', ')}`);
    if (guard === 'uffd') {
      const u = native.uffdInfo();
      if (u.kind === 'none')
        throw new RasError('ERR_UFFD_UNAVAILABLE', `no userfaultfd with poison markers here (${u.syscall}: ${errnoName(u.errno)}): ${UFFD_ADVICE}`, {
          errno: -u.errno,
          syscall: u.syscall,
        });
    }
    if (options.reserveBytes !== undefined && options.reserveBytes !== 'auto') {
      checkUint(options.reserveBytes, 'reserveBytes');
      // It is pre-faulted: more than half the machine would only end in the OOM killer.
      if (options.reserveBytes > os.totalmem() / 2)
        throw outOfRange(`reserveBytes ${options.reserveBytes} is more than half of this machine's memory`);
    }
    if (options.readThreads !== undefined) checkUint(options.readThreads, 'readThreads');
    if (options.kernelReadsAroundPoison !== undefined && typeof options.kernelReadsAroundPoison !== 'boolean')
      throw invalidArg('kernelReadsAroundPoison must be a boolean');
    if (options.journalPath !== undefined && typeof options.journalPath !== 'string') throw invalidArg('journalPath must be a string');
    if (guard === 'hwpoison' && !hwpoisonUsable(probeHwpoison())) {
      const e = probeHwpoison();
      throw new RasError('ERR_HWPOISON_UNAVAILABLE', `MADV_HWPOISON is not usable here (${errnoName(e)}): use lostPageGuard 'guard' or 'auto'`, {
        errno: -e,
        syscall: 'madvise',
      });
    }
    const journal = options.journalPath !== undefined ? Journal.open(options.journalPath) : undefined;
    // Before init: the reader threads start with the recovery lanes.
    if (options.readThreads !== undefined && engines.size === 0) native.setReadThreads(options.readThreads);
    native.init(dispatch);
    const engine = new RasEngine(options, journal);
    engines.add(engine);
    engine.applyReserve();
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
    const s = this.validateSpec(spec);
    // Decided before the mapping exists: the region goes live with its policy armed.
    const reason = ineligibleReason({ share: s.share, consumers: s.consumers, kernelReadsAround: this.readsAround });
    const mapped = native.mapRegion(s.path, s.size, s.offset, reasonCode(reason), GUARD_CODES[this.guard], s.guestPhysAddr);
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
    this.regions.set(mapped.id, region);
    this.applyReserve();
    this.reprotectFromJournal(region);
    return region;
  }

  /** Unmaps a region (its lost pages are forgotten by the ledger, not by the journal). */
  unmapRegion(region: Region): void {
    this.ownRegion(region);
    // vCPU threads on it first (they may wait for a paused engine): else they touch unmapped memory.
    for (const load of [...this.vcpuLoads]) if (load.region === region) load.stopNow();
    native.unmapRegion(region.id);
    region.closed = true;
    this.regions.delete(region.id);
    this.ledger.forget(region.name);
  }

  injectPoison(region: Region, offset: number, options: InjectOptions = {}): { mode: 'madvise' | 'simulate'; hostAddress: bigint } {
    this.ownRegion(region);
    region.checkRange(offset, 1);
    if (typeof options !== 'object' || options === null) throw invalidArg('options must be an object');
    const mode = options.mode ?? 'auto';
    if (!['madvise', 'simulate', 'auto'].includes(mode)) throw invalidArg(`mode must be madvise, simulate or auto`);
    const kind = options.kind ?? 'AR';
    if (kind !== 'AR' && kind !== 'AO') throw invalidArg('kind must be AR or AO');
    if (options.signal !== undefined && typeof options.signal !== 'boolean') throw invalidArg('signal must be a boolean');
    const usable = hwpoisonUsable(probeHwpoison());
    const chosen = mode === 'auto' ? (usable ? 'madvise' : 'simulate') : mode;
    if (chosen === 'madvise') {
      if (!usable) {
        const e = probeHwpoison();
        throw new RasError('ERR_HWPOISON_UNAVAILABLE', `MADV_HWPOISON is not usable here (${errnoName(e)}): needs root and CONFIG_MEMORY_FAILURE`, {
          errno: -e,
          syscall: 'madvise',
        });
      }
      if (kind === 'AO' || options.signal === false) throw invalidArg('kind and signal are for simulated poison only');
      return { mode: 'madvise', hostAddress: native.injectMadvise(region.id, offset).hostAddress };
    }
    const r = native.injectSimulated(region.id, offset, kind === 'AO', options.signal ?? true);
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
      if (c.processed + 0 >= c.captured && c.delivered >= c.posted) return;
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
    const c = native.counters();
    if (c.paused && c.processed < c.captured)
      throw new RasError('ERR_ENGINE_PAUSED', 'reports are waiting: resume() the engine before a reset');
    await this.whenIdle();
    const states = native.pageStates(region.id);
    let restored = 0;
    let stillSplit = 0;
    let reason: string | undefined;
    for (let page = 0; page < states.length; page++) {
      if (states[page] !== PageState.Split && states[page] !== PageState.Lost) continue;
      const r = native.restoreHugePage(region.id, page);
      if (r.skipped) continue;
      if (r.restored) restored++;
      else {
        stillSplit++;
        reason = `no huge page available (${r.syscall}: errno ${r.errno}): the page stays on fresh 4 KiB memory`;
      }
      const offset = page * region.hugePageSize;
      this.ledger.clearRange(region.name, offset, region.hugePageSize);
      this.journal?.appendReset({
        region: region.name,
        guestPhysAddr: region.guestPhysAddrOf(offset),
        size: region.hugePageSize,
        wallTime: new Date().toISOString(),
      });
    }
    const event: ResetEvent = { region: region.name, restoredHugePages: restored, stillSplit, ...(reason ? { reason } : {}) };
    this.emit('reset', event);
    return event;
  }

  stats(): EngineStats {
    this.checkOpen();
    const c = native.counters();
    return {
      reserveBytes: c.reserveBytes,
      reserveTarget: c.reserveTarget,
      guard: this.guard,
      ...(this.guard === 'guard' ? { kvmWarning: KVM_FAULT_GUARD_WARNING } : {}),
      userfaultfd: {
        kind: this.uffd.kind,
        ...(this.uffd.kind === 'none' ? { errno: -this.uffd.errno, syscall: this.uffd.syscall, advice: UFFD_ADVICE } : {}),
      },
      reports: { captured: c.captured, processed: c.processed, overflow: c.overflow, stale: c.stale },
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
    for (const load of [...this.vcpuLoads]) load.stopNow();
    for (const r of this.regions.values()) {
      native.unmapRegion(r.id);
      r.closed = true;
    }
    this.regions.clear();
    this.closed = true;
    engines.delete(this);
    for (const e of engines) e.applyReserve();
    native.shutdown();
    this.journal?.close();
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** @internal Routes one native event; false if the region is not this engine's. */
  handleNativeEvent(e: NativeEvent): boolean {
    const region = this.regions.get(e.regionId);
    if (!region) return false;
    try {
      this.onEvent(region, e);
    } catch (err) {
      // The journal could not be written: the loss must not go unreported, so report both.
      this.emit('error', err instanceof Error ? err : new Error(String(err)));
    }
    return true;
  }

  private onEvent(region: Region, e: NativeEvent): void {
    const offset = region.offsetOf(e.address);
    const hugeOffset = e.page * region.hugePageSize;
    switch (e.type) {
      case NativeEventType.Poison: {
        const split = e.pageState === PageState.Split;
        this.emit('poison', {
          region: region.name,
          hostAddress: e.address,
          offset,
          guestPhysAddr: region.guestPhysAddrOf(offset),
          hugePageIndex: e.page,
          kind: e.code === BUS_MCEERR_AO ? 'AO' : 'AR',
          reportedLsb: e.lsb,
          pageSize: split ? SUBPAGE : region.hugePageSize,
          alreadyLost: e.alreadyLost,
          threadId: e.tid,
          timeNs: e.timeNs,
        });
        return;
      }
      case NativeEventType.Recovered: {
        const lost = (e.lostSubpages ?? []).map((s) => hugeOffset + s * SUBPAGE);
        this.record(region, lost.map((o) => ({ offset: o, size: SUBPAGE })), 'recovered', e.page);
        const event: RecoveredEvent = {
          region: region.name,
          hugePageIndex: e.page,
          hugePageGuestPhysAddr: region.guestPhysAddrOf(hugeOffset),
          lostGuestPhysAddrs: lost.map((o) => region.guestPhysAddrOf(o)),
          bytesRecovered: e.bytes ?? 0,
          durationNs: e.durationNs ?? 0n,
          totalNs: (e.doneNs ?? e.timeNs) - e.timeNs,
          readCalls: e.reads ?? 0,
          usedReserve: e.usedReserve ?? false,
          guard: e.guard ? guardFromCode(e.guard) : this.guard,
          ...((e.guard ? guardFromCode(e.guard) : this.guard) === 'guard' ? { kvmWarning: KVM_FAULT_GUARD_WARNING } : {}),
          ...(e.guardErrno ? { guardErrno: -e.guardErrno, guardSyscall: e.guardSyscall } : {}),
        };
        this.emit('recovered', event);
        return;
      }
      case NativeEventType.Refused: {
        const reason: RefuseReason = reasonFromCode(e.reason ?? 0);
        this.record(region, [{ offset: hugeOffset, size: region.hugePageSize }], 'refused', e.page, reason);
        const event: RefusedEvent = {
          region: region.name,
          hugePageIndex: e.page,
          reason,
          message: REASON_WORDS[reason] + (e.errno ? ` (${e.syscall ?? '?'}: errno ${e.errno})` : ''),
          hugePageGuestPhysAddr: region.guestPhysAddrOf(hugeOffset),
          size: region.hugePageSize,
          ...(e.errno ? { errno: -e.errno, syscall: e.syscall } : {}),
        };
        this.emit('refused', event);
        return;
      }
      case NativeEventType.SubpageLost: {
        const lostOffset = region.offsetOf(e.lostAddress ?? e.address);
        if (this.record(region, [{ offset: lostOffset, size: SUBPAGE }], 'split-poison', e.page) > 0)
          this.emitLost(region, lostOffset, 'split-poison');
        return;
      }
      default:
        return;
    }
  }

  /** Journal first (durable), then ledger; returns how many frames were new. */
  private record(region: Region, frames: { offset: number; size: number }[], cause: LostCause, page: number, reason?: string): number {
    const fresh = frames.filter((f) => !this.ledger.contains(region.name, f.offset));
    if (fresh.length === 0) return 0;
    const wallTime = new Date().toISOString();
    this.journal?.appendLost(
      fresh.map(
        (f): LostFrame => ({
          region: region.name,
          guestPhysAddr: region.guestPhysAddrOf(f.offset),
          size: f.size,
          offset: f.offset,
          cause,
          wallTime,
          ...(reason ? { reason } : {}),
        }),
      ),
    );
    for (const f of fresh)
      this.ledger.add({
        region: region.name,
        guestPhysAddr: region.guestPhysAddrOf(f.offset),
        hostAddress: region.address + BigInt(f.offset),
        offset: f.offset,
        size: f.size,
        cause,
        hugePageIndex: page,
        ...(reason ? { reason } : {}),
      });
    return fresh.length;
  }

  private emitLost(region: Region, offset: number, cause: LostCause, size = SUBPAGE): void {
    const event: LostEvent = {
      region: region.name,
      guestPhysAddr: region.guestPhysAddrOf(offset),
      hostAddress: region.address + BigInt(offset),
      offset,
      size,
      cause,
    };
    this.emit('lost', event);
  }

  /** After a restart: frames the journal says are lost become inaccessible again before use. */
  private reprotectFromJournal(region: Region): void {
    const frames = this.replay?.lost.filter((f) => f.region === region.name) ?? [];
    if (frames.length === 0) return;
    const byPage = new Map<number, LostFrame[]>();
    for (const f of frames) {
      const page = Math.floor(f.offset / region.hugePageSize);
      byPage.set(page, [...(byPage.get(page) ?? []), f]);
    }
    for (const [page, list] of byPage) {
      const whole = list.some((f) => f.size >= region.hugePageSize);
      const hugeOffset = page * region.hugePageSize;
      if (whole || !region.eligible) {
        native.markLost(region.id, page);
        for (const f of list) this.ledger.add(this.replayedPage(region, f.offset, f.size, page, f.reason));
        this.emitLost(region, hugeOffset, 'replayed', region.hugePageSize);
        continue;
      }
      const subpages = list.map((f) => (f.offset - hugeOffset) / SUBPAGE);
      const out = native.recoverNow(region.id, page, subpages);
      const lost = out.ok ? out.lostSubpages.map((s) => hugeOffset + s * SUBPAGE) : [hugeOffset];
      for (const o of lost) {
        const size = out.ok ? SUBPAGE : region.hugePageSize;
        this.ledger.add(this.replayedPage(region, o, size, page));
        this.emitLost(region, o, 'replayed', size);
      }
    }
  }

  private replayedPage(region: Region, offset: number, size: number, page: number, reason?: string): LostPage {
    return {
      region: region.name,
      guestPhysAddr: region.guestPhysAddrOf(offset),
      hostAddress: region.address + BigInt(offset),
      offset,
      size,
      cause: 'replayed',
      hugePageIndex: page,
      ...(reason ? { reason } : {}),
    };
  }

  private applyReserve(): void {
    // The reserve serves the whole process: the largest wish of the open engines.
    let target = 0;
    for (const e of engines) target = Math.max(target, e.reserveWish());
    native.setReserve(target);
  }

  private reserveWish(): number {
    if (this.closed) return 0;
    if (this.reserveOption !== 'auto') return this.reserveOption;
    // One huge page of each size in use: the fast and the slow lane may both need one at once.
    return [...new Set([...this.regions.values()].map((r) => r.hugePageSize))].reduce((a, b) => a + b, 0);
  }

  private checkOpen(): void {
    if (this.closed) throw new RasError('ERR_ENGINE_CLOSED', 'the engine is closed');
  }

  /** @internal */
  checkOwns(region: Region): void {
    this.ownRegion(region);
  }

  private ownRegion(region: Region): void {
    this.checkOpen();
    if (!(region instanceof Region) || this.regions.get(region.id) !== region) {
      if (region instanceof Region && region.closed) throw new RasError('ERR_REGION_CLOSED', `region ${region.name} is unmapped`);
      throw invalidArg('region must be a region mapped by this engine');
    }
  }

  private validateSpec(spec: RegionSpec): Required<RegionSpec> {
    if (typeof spec !== 'object' || spec === null) throw invalidArg('region spec must be an object');
    const { name, path: file } = spec;
    if (typeof name !== 'string' || name.length === 0 || name.length > 200) throw invalidArg('name must be a non-empty string');
    if (typeof file !== 'string' || file.length === 0 || file.includes('\0')) throw invalidArg('path must be a file path');
    const size = checkUint(spec.size, 'size');
    const offset = checkUint(spec.offset ?? 0, 'offset');
    const gpaIn = spec.guestPhysAddr ?? 0n;
    if (typeof gpaIn !== 'bigint' && !(typeof gpaIn === 'number' && Number.isSafeInteger(gpaIn)))
      throw invalidArg('guestPhysAddr must be a bigint');
    const guestPhysAddr = BigInt(gpaIn);
    if (guestPhysAddr < 0n || guestPhysAddr + BigInt(size) > 1n << 52n) throw outOfRange('guestPhysAddr outside the 52-bit physical address space');
    const share = spec.share ?? false;
    if (typeof share !== 'boolean') throw invalidArg('share must be a boolean');
    const consumers = spec.consumers ?? [];
    if (!Array.isArray(consumers) || consumers.some((c) => !CONSUMERS.includes(c as Consumer)))
      throw invalidArg(`consumers must be a list of ${CONSUMERS.join(', ')}`);
    for (const r of this.regions.values()) {
      if (r.name === name) throw new RasError('ERR_REGION_EXISTS', `a region named ${name} is already mapped`);
      if (size > 0 && guestPhysAddr < r.guestPhysAddr + BigInt(r.size) && r.guestPhysAddr < guestPhysAddr + BigInt(size))
        throw new RasError('ERR_REGION_OVERLAP', `guest physical range overlaps region ${r.name}`);
    }
    // The file system is checked before anything is created: statfs of the directory.
    let st: fs.StatsFs;
    try {
      st = fs.statfsSync(path.dirname(path.resolve(file)));
    } catch (err) {
      throw Object.assign(new RasError((err as NodeJS.ErrnoException).code ?? 'ERR_INVALID_ARG', `cannot use ${file}: ${(err as Error).message}`), {
        errno: (err as NodeJS.ErrnoException).errno,
        syscall: 'statfs',
      });
    }
    if (st.type !== HUGETLBFS_MAGIC) throw new RasError('ERR_NOT_HUGETLBFS', `${file} is not on hugetlbfs (file system type 0x${st.type.toString(16)})`);
    const huge = st.bsize;
    if (size === 0 || size % huge !== 0) throw new RasError('ERR_SIZE_ALIGNMENT', `size ${size} is not a positive multiple of the huge page size ${huge}`);
    if (offset % huge !== 0) throw new RasError('ERR_SIZE_ALIGNMENT', `offset ${offset} is not a multiple of the huge page size ${huge}`);
    // The same file under another name (a hard link, a symlink) is the same file.
    let id: string | undefined;
    try {
      const st = fs.statSync(file);
      id = `${st.dev}:${st.ino}`;
    } catch {
      /* not there yet: created by the mapping */
    }
    for (const r of this.regions.values()) {
      if (id !== undefined && r.fileId === id && offset < r.fileOffset + r.size && r.fileOffset < offset + size)
        throw new RasError('ERR_REGION_OVERLAP', `file range overlaps region ${r.name}`);
    }
    return { name, path: file, size, offset, guestPhysAddr, share, consumers: [...consumers] };
  }
}
