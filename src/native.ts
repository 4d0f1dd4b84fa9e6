// The one typed view of the C++ addon: nothing else in the package calls the raw binding.
import bindings from 'bindings';

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

/** One event from the native worker thread (see native/worker.cc). */
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

export const enum NativeEventType {
  Poison = 1,
  Recovered = 2,
  Refused = 3,
  SubpageLost = 4,
  Dropped = 5,
}

export const enum PageState {
  Normal = 0,
  Pending = 1,
  Recovering = 2,
  Split = 3,
  Lost = 4,
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
  errno?: number;
  syscall?: string;
  stillSplit?: boolean;
}

export interface NativeVerify {
  checkedBytes: number;
  wrongBytes: number;
  firstWrongOffset: number;
  unreadableOffsets: number[];
  unreadableCount: number;
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
}

export interface NativeVcpuReport {
  accesses: number;
  wrongBytes: number;
  firstWrongOffset: number;
  stalls: { thread: number; hostAddress: bigint; stallNs: bigint }[];
  mceReports: { thread: number; hostAddress: bigint }[];
  slotFailures: number;
}

export interface NativeInject { hostAddress: bigint; signalledDuringCall: boolean }

export interface NativeUffdInfo {
  kind: 'user-mode-only' | 'full' | 'none';
  errno: number;
  syscall?: string;
}

interface Addon {
  /** Opens the process's userfaultfd for poison markers (once) and says which kind it got. */
  uffdInfo(): NativeUffdInfo;
  /** Address of the C API table (struct hugetlb_ras_api, include/hugetlb_ras.h). */
  nativeApi(): bigint;
  init(onEvents: (events: NativeEvent[]) => void): void;
  shutdown(): void;
  /** The policy is armed before the region goes live. guard: enum hugetlb_ras_guard. */
  mapRegion(path: string, size: number, offset: number, refuseReason: number, guard: number, guestPhysAddr: bigint): NativeMapped;
  unmapRegion(id: number): void;
  read(id: number, offset: number, length: number): Buffer | NativeFault;
  write(id: number, offset: number, bytes: Buffer): NativeFault | undefined;
  fillPattern(id: number, seed: number): NativeFault | undefined;
  verifyPattern(id: number, seed: number): NativeVerify;
  hwpoisonProbe(): number;
  injectMadvise(id: number, offset: number): NativeInject;
  injectSimulated(id: number, offset: number, ao: boolean, sendSignal: boolean): NativeInject;
  recoverNow(id: number, page: number, knownLostSubpages: number[]): NativeRecoverOutcome;
  markLost(id: number, page: number): void;
  restoreHugePage(id: number, page: number): NativeRestore;
  pageStates(id: number): Uint8Array;
  lostSubpages(id: number): number[];
  counters(): NativeCounters;
  pause(paused: boolean): void;
  setReserve(bytes: number, now?: boolean): void;
  setReadThreads(n: number): void;
  /** Tests: false forces the path of kernels without MADV_GUARD_INSTALL (before 6.13). */
  useGuardMarkers(on: boolean): void;
  hugeMappedShare(id: number, page: number): number;
  startVcpuLoad(id: number, threads: number, seed: number, writeRatio: number, windowOffset: number, windowLength: number): number;
  stopVcpuLoad(handle: number): NativeVcpuReport;
  naiveRecover(id: number, page: number): { ns: number; lost: number; reads: number };
  memcpyLimit(bytes: number): number;
}

export const native: Addon = bindings('hugetlb_ras') as Addon;

export function isFault(v: unknown): v is NativeFault {
  return typeof v === 'object' && v !== null && !Buffer.isBuffer(v) && typeof (v as NativeFault).fault === 'bigint';
}
