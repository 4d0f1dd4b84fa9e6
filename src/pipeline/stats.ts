// stats(): what the engine holds and has seen, for operators and tests: the reserve, the guard (and
// what it means for KVM), the userfaultfd, the report counters, the journal, and each region's pages.
import { UFFD_ADVICE, uffdInfo } from '../guards';
import { native, PageState, type NativeUffdInfo } from '../native';
import { KVM_FAULT_GUARD_WARNING, type Guard } from '../policy';
import type { JournalStats } from './durable';
import { RESERVE_1G_STALL, sizeKey } from './reserve';
import type { EngineState, StaleHugePage } from './state';

export interface EngineStats {
  /** Pre-faulted reserve memory held now (RAM it costs), and what the pools want in all. */
  reserveBytes: number;
  reserveTarget: number;
  /** The reserve per huge page size ('2M', '1G'): blocks wanted, ready, served and missed. */
  reserve: Record<string, { depth: number; ready: number; bytes: number; taken: number; missed: number }>;
  /** Set while a 1 GiB page is mapped and no 1 GiB block is held (the default): the stall a held block would save. */
  reserve1GStall?: string;
  guard: Guard;
  /** Set when `guard` is 'guard': what that means for a KVM guest, and what the VMM must do. */
  kvmWarning?: string;
  /**
   * Which recovery path runs. 'lazy' needs a full userfaultfd (it must see KVM's kernel-mode faults:
   * /dev/userfaultfd access, vm.unprivileged_userfaultfd=1 or CAP_SYS_PTRACE) and Linux >= 6.8
   * (UFFDIO_MOVE), and the 'uffd' guard, and memory that is not locked (mlockall MCL_FUTURE: 'eager'); else
   * 'eager' (why: `lazyUnavailable`, also set with 'lazy' when locked regions went eager). Counts are per process.
   */
  recovery: {
    path: 'lazy' | 'eager';
    lazyUnavailable?: string;
    lazyRecoveries: number;
    eagerRecoveries: number;
    /** Pieces filled for a thread that touched them; touched pieces moved back into the block; chunks collapsed back to 2 MiB. */
    faultFills: number;
    takenBack: number;
    collapsed: number;
    /**
     * Recoveries whose block could not replace the range (it was filled in place, as 4 KiB pages):
     * among them, a touched page pinned for I/O (io_uring fixed buffer) that must not move.
     */
    inPlaceFinishes: number;
    /** Recoveries that went the eager way because the memory is locked (lockMemory, mlockall MCL_FUTURE). */
    lockedEager: number;
  };
  /**
   * The properties replacement memory keeps: MADV_DONTFORK, MADV_DONTDUMP, the NUMA policy, and the
   * lock (Region.lockMemory, or mlockall(MCL_FUTURE): `futureLock`). `lockFailures`: replacements
   * RLIMIT_MEMLOCK kept from being locked (`lockErrno`: the last errno). `notCarried`: what could not
   * go with the memory (a userfaultfd registration the VMM made itself on guest RAM).
   */
  memory: {
    futureLock: 'off' | 'on' | 'on-fault';
    lockFailures: number;
    lockErrno?: number;
    dontDumpMarked: number;
    notCarried?: string;
  };
  /** The userfaultfd the engine opened for poison markers ('none': why, and what root can do). */
  userfaultfd: { kind: NativeUffdInfo['kind']; errno?: number; syscall?: string; advice?: string };
  /** stale: reports for a healthy frame of a split page (late KVM reports); the thread retried. */
  reports: { captured: number; processed: number; overflow: number; stale: number };
  /** With a journal: appends that failed, losses it does not hold yet (retried), retries that succeeded. */
  journal?: JournalStats & { path: string };
  /**
   * What the replay of the journal found (mapRegion): huge pages re-split from a valid handover (the
   * file's data was current), and huge pages split before the restart without one, whose data in the
   * file is stale (kept inaccessible, `lost` events with cause 'stale'; resetRegion gives them back).
   */
  replay: { handedOverHugePages: number; staleHugePages: StaleHugePage[] };
  /** Set while the engine is handed over (prepareHandover, not aborted): the handover's id. */
  handoverId?: string;
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

export function engineStats(s: EngineState, journal: (JournalStats & { path: string }) | undefined): EngineStats {
  const c = native.counters();
  return {
    reserveBytes: c.reserveBytes,
    reserveTarget: c.reserveTarget,
    reserve: Object.fromEntries(
      c.reservePools.map((p) => [sizeKey(p.size), { depth: p.depth, ready: p.ready, bytes: p.ready * p.size, taken: p.taken, missed: p.missed }]),
    ),
    ...([...s.regions.values()].some((r) => r.hugePageSize >= 1 << 30) && !c.reservePools.some((p) => p.size >= 1 << 30 && p.depth > 0)
      ? { reserve1GStall: RESERVE_1G_STALL }
      : {}),
    guard: s.guard,
    ...(s.guard === 'guard' ? { kvmWarning: KVM_FAULT_GUARD_WARNING } : {}),
    ...memoryStats(s.guard),
    userfaultfd: {
      kind: uffdInfo().kind,
      ...(uffdInfo().kind === 'none' ? { errno: -uffdInfo().errno, syscall: uffdInfo().syscall, advice: UFFD_ADVICE } : {}),
    },
    reports: { captured: c.captured, processed: c.processed, overflow: c.overflow, stale: c.stale },
    ...(journal ? { journal } : {}),
    replay: { handedOverHugePages: s.handover.handedOverHugePages, staleHugePages: [...s.handover.stale] },
    ...(s.handover.id !== undefined ? { handoverId: s.handover.id } : {}),
    regions: [...s.regions.values()].map((r) => {
      const states = native.pageStates(r.id);
      return {
        name: r.name,
        hugePageSize: r.hugePageSize,
        hugePages: r.hugePages,
        splitHugePages: states.filter((x) => x === PageState.Split).length,
        lostHugePages: states.filter((x) => x === PageState.Lost).length,
        lostSubpages: native.lostSubpages(r.id).length,
        bookkeepingBytes: r.bookkeepingBytes,
      };
    }),
  };
}

function memoryStats(guard: Guard): Pick<EngineStats, 'recovery' | 'memory'> {
  const m = native.memPropsInfo();
  return {
    recovery: lazyStats(guard, m.futureLock, m.lockedEager),
    memory: {
      futureLock: m.futureLock,
      lockFailures: m.lockFailures,
      ...(m.lockFailures ? { lockErrno: m.lockErrno } : {}),
      dontDumpMarked: m.dontDumpMarked,
      ...(m.foreignUffd
        ? { notCarried: `a userfaultfd registration the VMM made itself on guest RAM (seen in ${m.foreignUffd} region(s)) does not carry to replacement memory: register it again after a recovery` }
        : {}),
    },
  };
}

function lazyStats(guard: Guard, futureLock: string, lockedEager: number): EngineStats['recovery'] {
  const l = native.lazyInfo();
  const why = !l.available
    ? `${l.reason} (${l.syscall}: errno ${l.errno})`
    : !l.enabled
      ? 'turned off (lazyRecovery: false)'
      : guard !== 'uffd'
        ? `the lazy path marks lost subpages with userfaultfd poison markers; this engine's guard is '${guard}'`
        : futureLock !== 'off'
          ? 'the process locks new memory (mlockall MCL_FUTURE): a fresh range would be populated with zeros no fault replaces, so recoveries take the eager path'
          : undefined;
  // Locked regions only: the others still go lazily, and this says why some did not.
  const locked = lockedEager > 0 ? `locked memory (Region.lockMemory): ${lockedEager} recoveries took the eager path (a lazy fill needs memory that is not locked)` : undefined;
  return {
    path: why ? 'eager' : 'lazy',
    ...(why || locked ? { lazyUnavailable: why ?? locked } : {}),
    lazyRecoveries: l.lazy,
    eagerRecoveries: l.eager,
    faultFills: l.faultFills,
    takenBack: l.takenBack,
    collapsed: l.collapsed,
    inPlaceFinishes: l.inPlaceFinishes,
    lockedEager,
  };
}
