// The C++ addons' calls, typed: the engine's (hugetlb_ras) and the benchmark's (hugetlb_ras_bench).
// src/native.ts loads them; nothing else in the package calls the raw binding.
import type { NativeBookkeeping, NativeConstants, NativeCounters, NativeEvent, NativeFault, NativeHandover, NativeImported, NativeInject, NativeLazyInfo, NativeMapped, NativeMemPropsInfo, NativeRecoverOutcome, NativeRestore, NativeUffdInfo, NativeVcpuReport, NativeVerify } from './types';

export interface Addon {
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
  /** recoverNow for many pages of a region, re-split by readThreads threads at once (native/binding/replay.cc). */
  recoverMany(id: number, pages: number[], knownLostSubpages: number[][]): (NativeRecoverOutcome & { page: number; busy?: boolean })[];
  /** A migration's lost frames on one huge page (native/binding/import.cc): split, guarded in place, or lost whole. */
  importFrames(id: number, page: number, subpages: number[], whole: boolean, timeoutMs: number): NativeImported;
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
  /** simulate::Poison sleeps this long between deciding on a Normal page and its mprotect (0: off). */
  testSimPoisonHold(ns: number): void;
  /** Tests: the handover's pool check finds no free huge page (as an exhausted pool would). */
  testHandoverPoolEmpty(on: boolean): void;
  /** Tests: false forces the path of kernels without MADV_GUARD_INSTALL (before 6.13). */
  useGuardMarkers(on: boolean): void;
  /** Tests: the lost-subpage bookkeeping of a region descriptor with no memory (native/testing/bookkeeping.h). */
  testBookkeeping(size: number, hugeSize: number, marks: number[], clearPages: number[]): NativeBookkeeping;
  hugeMappedShare(id: number, page: number): number;
  startVcpuLoad(id: number, threads: number, seed: number, writeRatio: number, windowOffset: number, windowLength: number, landDelayMs?: number): number;
  stopVcpuLoad(handle: number): NativeVcpuReport;
}

/** The benchmark's native reference points: a separate addon, not part of the engine. */
export interface BenchAddon {
  /** The naive recovery of the 2024 QEMU RFC over one huge page at `address` (file `path` at `fileOffset`);
   * `poisonedFileOffsets`: simulated poison (reads there fail with EIO). */
  naiveRecover(address: bigint, hugePageSize: number, path: string, fileOffset: number, poisonedFileOffsets: number[]): { ns: number; lost: number; reads: number };
  /** memcpy of `bytes` into already-faulted memory, in ns: the limit of any copy-based recovery. */
  memcpyLimit(bytes: number): number;
  /** Per rep, ns of the C API's copy_from_guest over `bytes` at `gpa` into faulted memory, and (raw) of memcpy from `hva`. */
  guardedCopy(api: bigint, gpa: bigint, hva: bigint, bytes: number, reps: number, raw: boolean): { copyNs: number[]; memcpyNs: number[]; lostFrames: number; rc: number };
}
