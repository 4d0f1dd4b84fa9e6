// The one typed view of the C++ addon: nothing else in the package calls the raw binding.
// Constants shared with the native code come from the addon (native/binding/constants.cc), and
// every native error is built as RasError (native/binding/errors.cc).
import bindings from 'bindings';
import { RasError } from './errors';

export interface NativeFault { fault: bigint; signal: number; code: number }

export interface NativeMapped {
  id: number;
  address: bigint;
  hugePageSize: number;
  created: boolean;
  /** The file's size before mapRegion grew it. */
  originalSize: number;
  /** Identity of the backing file (a hard link is the same file). */
  dev: number;
  ino: number;
  bookkeepingBytes: number;
}

/** One event from the native recovery lanes (see native/lanes/, built in native/tojs/). */
export interface NativeEvent {
  type: NativeEventType;
  regionId: number;
  page: number;
  address: bigint;
  code: number;
  lsb: number;
  tid: number;
  timeNs: bigint;
  alreadyLost: boolean;
  /** State of the huge page when the worker took the report. */
  pageState: PageState;
  lostSubpages?: number[];
  bytes?: number;
  reads?: number;
  durationNs?: bigint;
  /** CLOCK_MONOTONIC when the huge page was usable again. */
  doneNs?: bigint;
  usedReserve?: boolean;
  path?: 'eager' | 'lazy';
  /** CLOCK_MONOTONIC when every piece was in place (lazy path; doneNs otherwise). */
  filledNs?: bigint;
  /** enum hugetlb_ras_guard: how the lost subpages were kept out. */
  guard?: number;
  /** errno of the region's preferred guard when it failed (it fell back to a fault guard). */
  guardErrno?: number;
  guardSyscall?: string;
  reason?: number;
  errno?: number;
  syscall?: string;
  lostAddress?: bigint;
}


export interface NativeRecoverOutcome {
  ok: boolean;
  reason: number;
  guard: number;
  lostSubpages: number[];
  bytes: number;
  durationNs: bigint;
  errno: number;
  syscall?: string;
}

export interface NativeRestore {
  restored: boolean;
  skipped: boolean;
  /** Set when skipped because the region is shared (a RefuseCode): nothing was punched or remapped. */
  reason?: number;
  errno?: number;
  syscall?: string;
  stillSplit?: boolean;
}

export interface NativeHandover {
  ok: boolean;
  /** Not a split page, or (`reason`, a RefuseCode) a region something else maps: nothing done. */
  skipped: boolean;
  reason?: number;
  /** Why it failed: 'ERR_NO_HUGE_PAGE' or 'ERR_HANDOVER_FAILED'. */
  code?: 'ERR_NO_HUGE_PAGE' | 'ERR_HANDOVER_FAILED';
  /** negative, as Node's */
  errno?: number;
  syscall?: string;
  /** The file's huge page was punched out (a failure after it leaves a hole there). */
  punched?: boolean;
  bytes?: number;
  lostSubpages?: number[];
  faultAddress?: bigint;
}

export interface NativeVerify {
  checkedBytes: number;
  wrongBytes: number;
  firstWrongOffset: number;
  unreadableOffsets: number[];
}

export interface NativeCounters {
  captured: number;
  overflow: number;
  /** Reports for a healthy frame of a split page (late or stale: the thread retried). */
  stale: number;
  processed: number;
  posted: number;
  delivered: number;
  paused: boolean;
  reserveBytes: number;
  reserveTarget: number;
  reservePools: NativeReservePool[];
}

/** One pool of the reserve: `depth` pre-faulted blocks of `size` bytes wanted, `ready` of them there. */
export interface NativeReservePool {
  size: number;
  depth: number;
  ready: number;
  /** Recoveries served from this pool, and those that found it empty (paid fresh memory). */
  taken: number;
  missed: number;
}

export interface NativeLazyInfo {
  /** A full userfaultfd (kernel-mode faults) with EVENT_REMAP, POISON and MOVE could be opened. */
  available: boolean;
  enabled: boolean;
  reason?: string;
  errno?: number;
  syscall?: string;
  lazy: number;
  eager: number;
  faultFills: number;
  takenBack: number;
  collapsed: number;
  inPlaceFinishes: number;
}

/** What the replacements of guest memory kept (native/split/props.h). */
export interface NativeMemPropsInfo {
  /** mlockall(MCL_FUTURE) in force now: new memory is locked ('on-fault': with MCL_ONFAULT). */
  futureLock: 'off' | 'on' | 'on-fault';
  lockedEager: number;
  lockFailures: number;
  lockErrno: number;
  dontDumpMarked: number;
  foreignUffd: number;
}

export interface NativeVcpuReport {
  accesses: number;
  wrongBytes: number;
  firstWrongOffset: number;
  stalls: { thread: number; hostAddress: bigint; stallNs: bigint; accessNs: bigint; startNs: bigint }[];
  mceReports: { thread: number; hostAddress: bigint }[];
}

export interface NativeInject { hostAddress: bigint }

/** The constants the addon exports, defined once in native/. */
export interface NativeConstants {
  pageState: { normal: number; pending: number; recovering: number; split: number; lost: number };
  refuseReason: {
    eligible: number;
    sharedMapping: number;
    vhostUser: number;
    ivshmem: number;
    vfio: number;
    kernelNoReadAround: number;
    readBackFailed: number;
    noMemory: number;
  };
  eventType: { poison: number; recovered: number; refused: number; subpageLost: number };
  /** enum hugetlb_ras_guard (include/hugetlb_ras.h). */
  guard: { none: number; uffd: number; hwpoison: number; fault: number };
  /** Fault codes of guarded access, negated (native/capture/access.h). */
  fault: { noSlot: number; waitTimeout: number; enginePaused: number };
  sigbus: number;
  busMceerrAr: number;
  busMceerrAo: number;
  subpageSize: number;
  hugetlbfsMagic: number;
}

export interface NativeUffdInfo {
  kind: 'user-mode-only' | 'full' | 'none';
  errno: number;
  syscall?: string;
}

interface Addon {
  readonly constants: NativeConstants;
  /** Every error the addon throws is built as `new cls(code, message, extra)`. */
  setErrorClass(cls: new (code: string, message: string, extra: Record<string, unknown>) => Error): void;
  /** Opens the process's userfaultfd for poison markers (once) and says which kind it got. */
  uffdInfo(): NativeUffdInfo;
  /** Address of the C API table (struct hugetlb_ras_api, include/hugetlb_ras.h). */
  nativeApi(): bigint;
  init(onEvents: (events: NativeEvent[]) => void): void;
  shutdown(): void;
  /** The journal's lock (lock.cc): an fd holding an OFD lock on the file, or -1 if another holds it. */
  lockFile(path: string): number;
  /** Tests: restoreHugePage finds no free huge page (falls back to anonymous memory). */
  testResetPoolEmpty(on: boolean): void;
  /** Tests: a handover's copy fails after `bytes` (0: off): a half-done handover. */
  testHandoverFailAfter(bytes: number): void;
  unlockFile(fd: number): void;
  /** close(): finish what is in flight (bounded), hand over the events not yet delivered (drain.cc). */
  drain(timeoutMs: number): { events: NativeEvent[]; settled: boolean; inFlight: [number, number][] };
  /** The policy is armed before the region goes live. guard: enum hugetlb_ras_guard. */
  mapRegion(path: string, size: number, offset: number, refuseReason: number, guard: number, guestPhysAddr: bigint): NativeMapped;
  /** The page states and lost subpages as they were when the region left the capture path (regions.cc). */
  unmapRegion(id: number): { states: Uint8Array; lost: number[] } | undefined;
  read(id: number, offset: number, length: number): Buffer | NativeFault;
  write(id: number, offset: number, bytes: Buffer): NativeFault | undefined;
  readAvailable(id: number, offset: number, length: number): { data: Buffer; lost: number[] } | NativeFault;
  writeAvailable(id: number, offset: number, bytes: Buffer): number[] | NativeFault;
  fillPattern(id: number, seed: number): NativeFault | undefined;
  verifyPattern(id: number, seed: number): NativeVerify;
  hwpoisonProbe(): number;
  injectMadvise(id: number, offset: number): NativeInject;
  injectSimulated(id: number, offset: number, ao: boolean, sendSignal: boolean): NativeInject;
  recoverNow(id: number, page: number, knownLostSubpages: number[]): NativeRecoverOutcome;
  markLost(id: number, page: number): void;
  restoreHugePage(id: number, page: number): NativeRestore;
  /** Writes a split page's current data back into a fresh huge page of its file (native/split/handover.h). */
  handoverPage(id: number, page: number): NativeHandover;
  pageStates(id: number): Uint8Array;
  lostSubpages(id: number): number[];
  counters(): NativeCounters;
  pause(paused: boolean): void;
  /** The reserve's pools: depths[i] pre-faulted blocks of sizes[i] bytes (others are dropped). */
  setReserve(sizes: number[], depths: number[], now?: boolean): void;
  setReadThreads(n: number): void;
  lazyInfo(): NativeLazyInfo;
  /** Lock a region (0 munlock, 1 mlock, 2 mlock2 MLOCK_ONFAULT) and remember it for its replacements. */
  lockRegion(id: number, mode: number): void;
  memPropsInfo(): NativeMemPropsInfo;
  /** false: never the lazy path (tests; as where no full userfaultfd exists). Process-wide. */
  setLazyRecovery(on: boolean): void;
  /** Tests: while true, no lazy recovery's back half starts (the page stays registered, filled on touch). */
  testHoldBackHalves(on: boolean): void;
  /** Tests: the handover's pool check finds no free huge page (as an exhausted pool would). */
  testHandoverPoolEmpty(on: boolean): void;
  /** Tests: false forces the path of kernels without MADV_GUARD_INSTALL (before 6.13). */
  useGuardMarkers(on: boolean): void;
  /** Tests: the lost-subpage bookkeeping of a region descriptor with no memory (native/testing/bookkeeping.h). */
  testBookkeeping(size: number, hugeSize: number, marks: number[], clearPages: number[]): NativeBookkeeping;
  hugeMappedShare(id: number, page: number): number;
  startVcpuLoad(id: number, threads: number, seed: number, writeRatio: number, windowOffset: number, windowLength: number): number;
  stopVcpuLoad(handle: number): NativeVcpuReport;
}

export interface NativeBookkeeping {
  lost: number[];
  lostInPageOfMark: number[];
  newlyMarked: number;
  bookkeepingBytes: number;
  rssDeltaBytes: number;
}

export const native: Addon = bindings('hugetlb_ras') as Addon;
native.setErrorClass(RasError);

const c = native.constants;

export const PageState = {
  Normal: c.pageState.normal,
  Pending: c.pageState.pending,
  Recovering: c.pageState.recovering,
  Split: c.pageState.split,
  Lost: c.pageState.lost,
} as const;
export type PageState = number;

export const NativeEventType = {
  Poison: c.eventType.poison,
  Recovered: c.eventType.recovered,
  Refused: c.eventType.refused,
  SubpageLost: c.eventType.subpageLost,
} as const;
export type NativeEventType = number;

/** Refuse-reason codes of setPolicy and of refused events (native/state/region.h RefuseReason). */
export const RefuseCode = {
  Eligible: c.refuseReason.eligible,
  SharedMapping: c.refuseReason.sharedMapping,
  VhostUser: c.refuseReason.vhostUser,
  Ivshmem: c.refuseReason.ivshmem,
  Vfio: c.refuseReason.vfio,
  KernelNoReadAround: c.refuseReason.kernelNoReadAround,
  ReadBackFailed: c.refuseReason.readBackFailed,
  NoMemory: c.refuseReason.noMemory,
} as const;
export type RefuseCode = number;

/** How lost subpages are kept out: enum hugetlb_ras_guard (mapRegion's guard, events' guard). */
export const GuardCode = {
  None: c.guard.none,
  Uffd: c.guard.uffd,
  Hwpoison: c.guard.hwpoison,
  Fault: c.guard.fault,
} as const;
export type GuardCode = number;

/** NativeFault.signal when a guarded access ended without a signal (native/capture/access.h kFault*). */
export const FaultCode = {
  NoSlot: -c.fault.noSlot,
  WaitTimeout: -c.fault.waitTimeout,
  EnginePaused: -c.fault.enginePaused,
} as const;

export const SIGBUS: number = c.sigbus;
export const SUBPAGE_SIZE: number = c.subpageSize;
export const HUGETLBFS_MAGIC: number = c.hugetlbfsMagic;
export const BUS_MCEERR_AR: number = c.busMceerrAr;
export const BUS_MCEERR_AO: number = c.busMceerrAo;

/** The benchmark's native reference points: a separate addon, not part of the engine. */
export interface BenchAddon {
  /** The naive recovery of the 2024 QEMU RFC over one huge page at `address` (file `path` at `fileOffset`);
   * `poisonedFileOffsets`: simulated poison (reads there fail with EIO). */
  naiveRecover(address: bigint, hugePageSize: number, path: string, fileOffset: number, poisonedFileOffsets: number[]): { ns: number; lost: number; reads: number };
  /** memcpy of `bytes` into already-faulted memory, in ns: the limit of any copy-based recovery. */
  memcpyLimit(bytes: number): number;
}

let bench: BenchAddon | undefined;
export function benchNative(): BenchAddon {
  if (!bench) {
    const b = bindings('hugetlb_ras_bench') as BenchAddon & Pick<Addon, 'setErrorClass'>;
    b.setErrorClass(RasError);
    bench = b;
  }
  return bench;
}

export function isFault(v: unknown): v is NativeFault {
  return typeof v === 'object' && v !== null && !Buffer.isBuffer(v) && typeof (v as NativeFault).fault === 'bigint';
}
