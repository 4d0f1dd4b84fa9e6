// Reset: after a guest reset, huge pages come back where a region was split or lost; the ledger and
// the journal forget the losses they covered.
import { RasError } from '../errors';
import type { ResetEvent, ResetSkip } from '../events';
import { native, PageState } from '../native';
import { reasonFromCode, type RefuseReason } from '../policy';
import type { Region } from '../region';
import { checkNotHandedOver } from './handover';
import { forgetRange } from './replay';
import type { EngineState } from './state';

/** Why a reset must not punch or remap a shared region's page. */
export const RESET_SKIP_WORDS: Partial<Record<RefuseReason, string>> = {
  'shared-mapping': 'another process maps this memory (share=on): punching the page would make it read zeros',
  'vhost-user': 'a vhost-user backend maps this memory: punching the page would make it read zeros',
  ivshmem: 'ivshmem shares this memory with another VM: punching the page would make it read zeros',
  vfio: 'vfio may have this page pinned: the device would keep the old page while the CPU got a new one',
};

export async function resetRegion(s: EngineState, region: Region, whenIdle: () => Promise<void>): Promise<ResetEvent> {
  checkNotHandedOver(s, 'resetRegion');
  const c = native.counters();
  if (c.paused && c.processed < c.captured) throw new RasError('ERR_ENGINE_PAUSED', 'reports are waiting: resume() the engine before a reset');
  await whenIdle();
  const states = native.pageStates(region.id);
  let restored = 0;
  let stillSplit = 0;
  let reason: string | undefined;
  const skipped: ResetSkip[] = [];
  for (let page = 0; page < states.length; page++) {
    if (states[page] !== PageState.Split && states[page] !== PageState.Lost) continue;
    const r = native.restoreHugePage(region.id, page);
    if (r.skipped) {
      if (r.reason !== undefined) {
        const why = reasonFromCode(r.reason);
        const hugePageGuestPhysAddr = region.guestPhysAddrOf(page * region.hugePageSize);
        skipped.push({ hugePageIndex: page, hugePageGuestPhysAddr, reason: why, message: RESET_SKIP_WORDS[why] ?? why });
      }
      continue;
    }
    if (r.restored) restored++;
    else {
      stillSplit++;
      reason = `no huge page available (${r.syscall}: errno ${r.errno}): the page stays on fresh 4 KiB memory`;
    }
    const offset = page * region.hugePageSize;
    s.ledger.clearRange(region.name, offset, region.hugePageSize);
    s.durable.dropRange(region.name, offset, region.hugePageSize);
    forgetRange(s, region.name, offset, region.hugePageSize);
    // Not restored: the page is on anonymous memory (or still split), not the file's: a successor
    // must find it stale, so a `split` record goes with the reset. A refused write is reported and
    // retried (durable.ts): the page is fresh memory now whatever the disk does.
    const rec = { region: region.name, guestPhysAddr: region.guestPhysAddrOf(offset), size: region.hugePageSize, wallTime: new Date().toISOString() };
    s.durable.reset(rec, !r.restored, page);
  }
  const event: ResetEvent = { region: region.name, restoredHugePages: restored, stillSplit, ...(reason ? { reason } : {}), skipped };
  s.events.deliver('reset', event);
  return event;
}
