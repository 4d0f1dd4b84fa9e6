// Typed events of the engine.
import { EventEmitter } from 'node:events';
import { RasError } from './errors';
import type { LostCause } from './ledger/ledger';
import type { Guard, RefuseReason } from './policy';

export interface PoisonEvent {
  region: string;
  hostAddress: bigint;
  offset: number;
  guestPhysAddr: bigint;
  hugePageIndex: number;
  /** BUS_MCEERR_AR (action required: an access consumed it) or _AO (found asynchronously). */
  kind: 'AR' | 'AO';
  /** si_addr_lsb as reported; not trusted (x86 KVM reports 12 on huge pages). */
  reportedLsb: number;
  /** The page size the engine used: the region's huge page size, or 4096 once it is split. */
  pageSize: number;
  /**
   * The memory was already known lost. With `by: 'vcpu'` the guest touched it again: inject an MCE
   * for this frame. With `by: 'engine-access'` it was the VMM's own guarded `region.read()`/`write()`
   * (which threw `PoisonError`): not the guest's access, inject nothing.
   */
  alreadyLost: boolean;
  /** Whose access it was: the JS thread's guarded access ('engine-access'), or any other thread ('vcpu'). */
  by: PoisonAccessor;
  threadId: number;
  /** CLOCK_MONOTONIC nanoseconds when the signal arrived. */
  timeNs: bigint;
}

/**
 * 'engine-access': the report came from the thread that runs the engine (JavaScript): a guarded
 * `region.read()`/`write()` or the engine's own check. 'vcpu': any other thread of the process (a vCPU
 * thread, or a native thread of the VMM: the engine cannot tell those apart).
 */
export type PoisonAccessor = 'vcpu' | 'engine-access';

export interface RecoveredEvent {
  region: string;
  hugePageIndex: number;
  hugePageGuestPhysAddr: bigint;
  /** The 4 KiB guest frames that are gone: inject a machine check for these. */
  lostGuestPhysAddrs: bigint[];
  bytesRecovered: number;
  /** Time spent splitting (read back, guard, swap); on the lazy path the front half (in place with the touched 4 KiB). */
  durationNs: bigint;
  /** From the first report of this huge page to the moment it was usable again (vCPUs released). */
  totalNs: bigint;
  /**
   * 'eager': read back whole, then swapped in (vCPUs waited for all of it). 'lazy': in place at
   * once with the touched 4 KiB, vCPUs released, other pieces filled when first touched, then the
   * page read whole off to the side and swapped in with the touched pieces moved into it (needs a
   * full userfaultfd: see `stats().recovery`); the event comes after that swap.
   */
  path: 'eager' | 'lazy';
  /** From the first report to the whole huge page in place (equals totalNs on the eager path). */
  filledNs: bigint;
  /**
   * Lazy path: of filledNs, the time the back half spent faulting in its block (the memory the page
   * is read into) because the reserve had none (`usedReserve` false). 0n from the reserve, 0n on the
   * eager path (there the fault-in is inside durationNs), and 0n on a kernel without
   * MADV_POPULATE_WRITE (5.14), where the read faults the block.
   */
  blockFaultNs: bigint;
  readCalls: number;
  usedReserve: boolean;
  /** How the lost subpages are kept inaccessible (see `Guard`). */
  guard: Guard;
  /** Set when `guard` is 'guard': a KVM guest touching a lost frame will not get a machine check from KVM. */
  kvmWarning?: string;
  /** When the engine's guard failed for this page and it fell back to 'guard' (negative errno, as Node's): why. */
  guardErrno?: number;
  guardSyscall?: string;
}

export interface RefusedEvent {
  region: string;
  hugePageIndex: number;
  reason: RefuseReason;
  message: string;
  hugePageGuestPhysAddr: bigint;
  /** The whole huge page is lost. */
  size: number;
  errno?: number;
  syscall?: string;
}

/** A 4 KiB frame lost after its huge page was split, or known lost from the journal. */
export interface LostEvent {
  region: string;
  guestPhysAddr: bigint;
  hostAddress: bigint;
  offset: number;
  size: number;
  cause: LostCause;
}

/** A split or lost huge page a reset left alone: the memory is shared, so its losses stay recorded. */
export interface ResetSkip {
  hugePageIndex: number;
  hugePageGuestPhysAddr: bigint;
  reason: RefuseReason;
  message: string;
}

export interface ResetEvent {
  region: string;
  restoredHugePages: number;
  /** Huge pages that stayed split (fresh 4 KiB memory) because the huge page pool was empty. */
  stillSplit: number;
  reason?: string;
  /**
   * Huge pages not reset because another party maps the memory (share=on, vhost-user, ivshmem:
   * the peer would read zeros; vfio: the device would keep the old pinned page). Nothing is punched
   * or remapped there; their losses stay in the ledger and the journal.
   */
  skipped: ResetSkip[];
}

export interface RasEventMap {
  poison: PoisonEvent;
  recovered: RecoveredEvent;
  refused: RefusedEvent;
  lost: LostEvent;
  reset: ResetEvent;
  /**
   * Something went wrong off the caller's stack: the journal could not be written
   * (`ERR_JOURNAL_WRITE`, with `path`, `frames` and `cause`), or a listener threw
   * (`ERR_LISTENER_FAILED`, with `event` and `cause`). Never thrown: without an `error` listener it
   * becomes a process warning (`process.emitWarning`).
   */
  error: Error;
}

export class RasEvents extends EventEmitter {
  override on<K extends keyof RasEventMap>(name: K, listener: (e: RasEventMap[K]) => void): this {
    return super.on(name, listener);
  }
  override once<K extends keyof RasEventMap>(name: K, listener: (e: RasEventMap[K]) => void): this {
    return super.once(name, listener);
  }
  override off<K extends keyof RasEventMap>(name: K, listener: (e: RasEventMap[K]) => void): this {
    return super.off(name, listener);
  }
  override emit<K extends keyof RasEventMap>(name: K, e: RasEventMap[K]): boolean {
    return super.emit(name, e);
  }

  /**
   * @internal The engine's way to emit: every listener runs, whatever another one throws, and nothing
   * is thrown to the caller (the native worker's callback, a timer). A listener's error is reported
   * (`reportError`) after the others have run.
   */
  deliver<K extends keyof RasEventMap>(name: K, e: RasEventMap[K]): void {
    const failures: unknown[] = [];
    for (const listener of this.rawListeners(name) as ((e: RasEventMap[K]) => void)[]) {
      try {
        listener.call(this, e);
      } catch (err) {
        failures.push(err);
      }
    }
    for (const err of failures) {
      const why = err instanceof Error ? err.message : String(err);
      const wrapped = new RasError('ERR_LISTENER_FAILED', `a '${name}' listener threw: ${why}`, { event: name, cause: err });
      if (name === 'error') warn(wrapped);
      else this.reportError(wrapped);
    }
  }

  /** @internal Reports an error off the caller's stack: to the `error` listeners, else as a process warning. Never throws. */
  reportError(err: Error): void {
    if (this.listenerCount('error') === 0) return warn(err);
    this.deliver('error', err);
  }
}

function warn(err: Error): void {
  try {
    process.emitWarning(err);
  } catch {
    /* nothing may throw out of the engine's callbacks */
  }
}
