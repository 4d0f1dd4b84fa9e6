// Close: before an engine unmaps its regions, every recovery in flight is finished or recorded. The
// native drain (native/binding/drain.cc) processes the reports still waiting (a paused engine too)
// and completes the lazy back halves within CLOSE_DRAIN_MS, and hands over the events posted but not
// yet delivered: they are dispatched here, synchronously, so their losses reach the journal. Then
// what the native side knows and the ledger does not (an event that did not come in time) is
// recorded from the page states and the lost-subpage bitmap: a page still pending or recovering is
// recorded lost whole; a lost page, or a lost subpage, the ledger lacks is recorded as it is.
import { SUBPAGE } from '../constants';
import { native, PageState } from '../native';
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
  for (const region of s.regions.values()) {
    const states = native.pageStates(region.id);
    for (let page = 0; page < states.length; page++) {
      const st = states[page];
      const whole = st === PageState.Pending || st === PageState.Recovering || st === PageState.Lost;
      if (whole) {
        const reason = st === PageState.Lost ? undefined : UNFINISHED_REASON;
        record(s, region, [{ offset: page * region.hugePageSize, size: region.hugePageSize }], 'refused', page, reason);
      }
    }
    const subs = native.lostSubpages(region.id).filter((o) => !s.ledger.contains(region.name, o));
    for (const o of subs) {
      const page = Math.floor(o / region.hugePageSize);
      record(s, region, [{ offset: o, size: SUBPAGE }], inFlight.has(`${region.id}:${page}`) ? 'recovered' : 'split-poison', page);
    }
  }
}
