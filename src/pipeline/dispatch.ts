// Dispatch: native event batches (from the one worker of the process) are routed to the engine owning
// the region, and each native event becomes the engine's typed events, a loss recorded first.
import * as fs from 'node:fs';
import { BUS_MCEERR_AO, SUBPAGE } from '../constants';
import type { RecoveredEvent, RefusedEvent } from '../events';
import { NativeEventType, PageState, type NativeEvent } from '../native';
import { guardFromCode, KVM_FAULT_GUARD_WARNING, reasonFromCode, REASON_WORDS, type RefuseReason } from '../policy';
import type { Region } from '../region';
import { attached } from './engines';
import { emitLost, record, recordSplit } from './record';
import type { EngineState } from './state';

/**
 * The callback the native worker is started with (through a ThreadSafeFunction). Nothing may throw out
 * of it: a throw would abandon the rest of the batch. Each event is handled on its own, so one that
 * fails (a listener, the journal) never costs the others; listeners cannot throw here (deliver()).
 */
export function dispatch(events: NativeEvent[]): void {
  batching++;
  try {
    for (const e of events) {
      try {
        for (const engine of attached()) if (engine.handleNativeEvent(e)) break;
      } catch (err) {
        bug(err);
      }
    }
  } finally {
    batching--;
  }
  // The batch's losses are journaled (one append per engine), then its events delivered.
  if (batching === 0) {
    // Taken first: a listener run by a release may close an engine, which dispatches a batch of its own.
    const states = [...holding];
    holding.clear();
    for (const s of states) {
      try {
        s.durable.release();
      } catch (err) {
        bug(err);
      }
    }
  }
  // This batch is counted as delivered when this callback returns.
  for (const engine of attached()) {
    try {
      engine.batchDelivered(events.length);
    } catch (err) {
      bug(err);
    }
  }
}

function bug(err: unknown): void {
  try {
    process.emitWarning(err instanceof Error ? err : new Error(String(err)), 'RasInternalError');
  } catch {
    /* nothing may throw out of the native callback */
  }
}

/** The JS thread's kernel thread id (a guarded access by the VMM itself reports it). */
let jsTid: number | undefined;
export function jsThreadId(): number {
  if (jsTid === undefined) {
    try {
      jsTid = Number(fs.readlinkSync('/proc/thread-self').split('/').pop());
    } catch {
      jsTid = process.pid;
    }
  }
  return jsTid;
}

/** > 0 while dispatch() handles a batch; the engines it touched hold their journal appends (durable.ts). */
let batching = 0;
const holding = new Set<EngineState>();

/** Routes one native event to this engine's state; false if the region is not this engine's. */
export function routeEvent(s: EngineState, e: NativeEvent): boolean {
  const region = s.regions.get(e.regionId);
  if (!region) return false;
  if (batching > 0 && !holding.has(s)) {
    s.durable.hold();
    holding.add(s);
  }
  try {
    onEvent(s, region, e);
  } catch (err) {
    // Not a listener's or the journal's (both are handled where they happen): report it, go on.
    s.events.reportError(err instanceof Error ? err : new Error(String(err)));
  }
  return true;
}

function onEvent(s: EngineState, region: Region, e: NativeEvent): void {
  const offset = region.offsetOf(e.address);
  const hugeOffset = e.page * region.hugePageSize;
  switch (e.type) {
    case NativeEventType.Poison: {
      const split = e.pageState === PageState.Split;
      s.durable.deliver('poison', {
        region: region.name,
        hostAddress: e.address,
        offset,
        guestPhysAddr: region.guestPhysAddrOf(offset),
        hugePageIndex: e.page,
        kind: e.code === BUS_MCEERR_AO ? 'AO' : 'AR',
        reportedLsb: e.lsb,
        pageSize: split ? SUBPAGE : region.hugePageSize,
        alreadyLost: e.alreadyLost,
        by: e.tid === jsThreadId() ? 'engine-access' : 'vcpu',
        threadId: e.tid,
        timeNs: e.timeNs,
      });
      return;
    }
    case NativeEventType.Recovered: {
      const lost = (e.lostSubpages ?? []).map((sp) => hugeOffset + sp * SUBPAGE);
      // Journal first: the lost frames, or (none lost) that the page lives in private memory now.
      if (lost.length > 0) record(s, region, lost.map((o) => ({ offset: o, size: SUBPAGE })), 'recovered', e.page);
      else recordSplit(s, region, e.page);
      const guard = e.guard ? guardFromCode(e.guard) : s.guard;
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
        path: e.path ?? 'eager',
        filledNs: (e.filledNs ?? e.doneNs ?? e.timeNs) - e.timeNs,
        blockFaultNs: e.blockFaultNs ?? 0n,
        guard,
        ...(guard === 'guard' ? { kvmWarning: KVM_FAULT_GUARD_WARNING } : {}),
        ...(e.guardErrno ? { guardErrno: -e.guardErrno, guardSyscall: e.guardSyscall } : {}),
      };
      s.durable.deliver('recovered', event);
      return;
    }
    case NativeEventType.Refused: {
      const reason: RefuseReason = reasonFromCode(e.reason ?? 0);
      record(s, region, [{ offset: hugeOffset, size: region.hugePageSize }], 'refused', e.page, reason);
      const event: RefusedEvent = {
        region: region.name,
        hugePageIndex: e.page,
        reason,
        message: REASON_WORDS[reason] + (e.errno ? ` (${e.syscall ?? '?'}: errno ${e.errno})` : ''),
        hugePageGuestPhysAddr: region.guestPhysAddrOf(hugeOffset),
        size: region.hugePageSize,
        ...(e.errno ? { errno: -e.errno, syscall: e.syscall } : {}),
      };
      s.durable.deliver('refused', event);
      return;
    }
    case NativeEventType.SubpageLost: {
      const lostOffset = region.offsetOf(e.lostAddress ?? e.address);
      if (record(s, region, [{ offset: lostOffset, size: SUBPAGE }], 'split-poison', e.page) > 0) emitLost(s, region, lostOffset, 'split-poison');
      return;
    }
    default:
      return;
  }
}
