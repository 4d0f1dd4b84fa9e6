// The shapes of what the C++ addon returns and takes (src/native.ts loads it; addon.ts lists its calls).

/** Values of src/native.ts's PageState and NativeEventType (the addon's constants). */
type PageState = number;
type NativeEventType = number;

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
  /** Lazy back half: ns spent faulting in a block not from the reserve. */
  blockFaultNs?: bigint;
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
  /** pread calls the read-back made (recoverNow). */
  reads?: number;
  durationNs: bigint;
  errno: number;
  syscall?: string;
}

export interface NativeImported {
  /** Still under recovery after the wait (or the engine is paused): nothing done. */
  busy: boolean;
  /** The whole huge page is lost now (asked for, or the split failed). */
  whole: boolean;
  splitFailed: boolean;
  /** Why the split failed (a RefuseCode). */
  reason: number;
  guard: number;
  /** Subpages newly lost here (after a split: every lost subpage of the page), sorted. */
  lostSubpages: number[];
  errno?: number;
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

export interface NativeBookkeeping {
  lost: number[];
  lostInPageOfMark: number[];
  newlyMarked: number;
  bookkeepingBytes: number;
  rssDeltaBytes: number;
}
