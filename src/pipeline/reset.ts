// Reset: after a guest reset, huge pages come back where a region was split or lost; the ledger and
// the journal forget the losses they covered.
import { RasError } from '../errors';
import type { ResetEvent } from '../events';
import { native, PageState } from '../native';
import type { Region } from '../region';
import type { EngineState } from './state';

export async function resetRegion(s: EngineState, region: Region, whenIdle: () => Promise<void>): Promise<ResetEvent> {
  const c = native.counters();
  if (c.paused && c.processed < c.captured) throw new RasError('ERR_ENGINE_PAUSED', 'reports are waiting: resume() the engine before a reset');
  await whenIdle();
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
    s.ledger.clearRange(region.name, offset, region.hugePageSize);
    s.journal?.appendReset({
      region: region.name,
      guestPhysAddr: region.guestPhysAddrOf(offset),
      size: region.hugePageSize,
      wallTime: new Date().toISOString(),
    });
  }
  const event: ResetEvent = { region: region.name, restoredHugePages: restored, stillSplit, ...(reason ? { reason } : {}) };
  s.events.emit('reset', event);
  return event;
}
