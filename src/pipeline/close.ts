// Close: before an engine unmaps its regions, every recovery in flight is finished or recorded. The
// native drain (native/binding/drain.cc) processes the reports still waiting (a paused engine too)
// and completes the lazy back halves within CLOSE_DRAIN_MS, and hands over the events posted but not
// yet delivered: they are dispatched here, synchronously, so their losses reach the journal. Then
// what the native side knows and the ledger does not (an event that did not come in time) is
// recorded from the page states and the lost-subpage bitmap: a page still pending or recovering is
// recorded lost whole; a lost page, or a lost subpage, the ledger lacks is recorded as it is.
//
// A memory error can still be captured after that, until the region leaves the capture path in the
// unmap: the unmap (unmapAndRecord) returns the page states as they were at that moment, when no
// handler can find the region any more, and whatever they show that the ledger lacks is recorded
// the same way before unmapRegion() or close() returns.
import { SUBPAGE } from '../constants';
import type { LostCause } from '../ledger/ledger';
import { native, PageState } from '../native';
import type { Region } from '../region';
import { dispatch } from './dispatch';
import { record } from './record';
import type { EngineState } from './state';

/** How long close() waits for recoveries in flight before it records what is left as lost. */
export const CLOSE_DRAIN_MS = 10_000;

export const UNFINISHED_REASON = 'the engine closed before the recovery of this huge page finished';

export function finishInFlight(s: EngineState): void {
  const d = native.drain(CLOSE_DRAIN_MS);
  if (d.events.length > 0) dispatch(d.events);
  const inFlight = new Set(d.inFlight.map(([id, page]) => `${id}:${page}`));
  for (const region of s.regions.values())
    recordFromStates(s, region, native.pageStates(region.id), native.lostSubpages(region.id), (page) => inFlight.has(`${region.id}:${page}`));
}

/** Unmaps the region and records what its pages show at that moment that the ledger lacks (after finishInFlight). */
export function unmapAndRecord(s: EngineState, region: Region): void {
  const final = native.unmapRegion(region.id);
  if (!final) return;
  // Anything new here came after the drain: a report nobody processed, or a recovery whose event
  // will find no region. Recorded as the drain records what did not finish, and joins the journal's
  // view as carryOver() did for the rest (a later mapRegion() of it in this life applies it).
  const late = recordFromStates(s, region, final.states, final.lost, () => false);
  for (const f of late) {
    const frame = { region: region.name, guestPhysAddr: region.guestPhysAddrOf(f.offset), size: f.size, offset: f.offset, cause: f.cause, wallTime: '' };
    s.replay?.lost.push(f.reason ? { ...frame, reason: f.reason } : frame);
  }
}

interface Recorded {
  offset: number;
  size: number;
  cause: LostCause;
  reason?: string;
}

/** Records what the page states and lost subpages show that the ledger lacks; returns what was new. */
function recordFromStates(s: EngineState, region: Region, states: Uint8Array, lost: number[], inFlight: (page: number) => boolean): Recorded[] {
  const out: Recorded[] = [];
  const add = (f: Recorded, page: number) => {
    if (record(s, region, [{ offset: f.offset, size: f.size }], f.cause, page, f.reason) > 0) out.push(f);
  };
  for (let page = 0; page < states.length; page++) {
    const st = states[page];
    if (st === PageState.Pending || st === PageState.Recovering || st === PageState.Lost) {
      const f: Recorded = { offset: page * region.hugePageSize, size: region.hugePageSize, cause: 'refused' };
      if (st !== PageState.Lost) f.reason = UNFINISHED_REASON;
      add(f, page);
    }
  }
  for (const o of lost.filter((o) => !s.ledger.contains(region.name, o))) {
    const page = Math.floor(o / region.hugePageSize);
    add({ offset: o, size: SUBPAGE, cause: inFlight(page) ? 'recovered' : 'split-poison' }, page);
  }
  return out;
}
