// Replay: after a restart, the frames the journal says are lost become inaccessible again when their
// region is mapped, before the guest can use them, and are reported (cause 'replayed'). The memory is
// protected and the ledger has the losses when mapRegion() returns; the `lost` events come after it
// returned (setImmediate), so listeners attached after mapRegion() get them.
import { SUBPAGE } from '../constants';
import type { LostPage } from '../ledger/ledger';
import type { LostFrame } from '../ledger/records';
import { native } from '../native';
import type { Region } from '../region';
import type { LostEvent } from '../events';
import type { EngineState } from './state';

export function reprotectFromJournal(s: EngineState, region: Region): void {
  const frames = s.replay?.lost.filter((f) => f.region === region.name) ?? [];
  if (frames.length === 0) return;
  const events: LostEvent[] = [];
  // Collected now, delivered after mapRegion() returned.
  const report = (offset: number, size: number): void => {
    events.push({ region: region.name, guestPhysAddr: region.guestPhysAddrOf(offset), hostAddress: region.address + BigInt(offset), offset, size, cause: 'replayed' });
  };
  const byPage = new Map<number, LostFrame[]>();
  for (const f of frames) {
    const page = Math.floor(f.offset / region.hugePageSize);
    byPage.set(page, [...(byPage.get(page) ?? []), f]);
  }
  for (const [page, list] of byPage) {
    const whole = list.some((f) => f.size >= region.hugePageSize);
    const hugeOffset = page * region.hugePageSize;
    if (whole || !region.eligible) {
      native.markLost(region.id, page);
      for (const f of list) s.ledger.add(replayedPage(region, f.offset, f.size, page, f.reason));
      report(hugeOffset, region.hugePageSize);
      continue;
    }
    const subpages = list.map((f) => (f.offset - hugeOffset) / SUBPAGE);
    const out = native.recoverNow(region.id, page, subpages);
    const lost = out.ok ? out.lostSubpages.map((sp) => hugeOffset + sp * SUBPAGE) : [hugeOffset];
    for (const o of lost) {
      const size = out.ok ? SUBPAGE : region.hugePageSize;
      s.ledger.add(replayedPage(region, o, size, page));
      report(o, size);
    }
  }
  s.idle.defer(() => {
    for (const e of events) s.events.deliver('lost', e);
  });
}

function replayedPage(region: Region, offset: number, size: number, page: number, reason?: string): LostPage {
  return {
    region: region.name,
    guestPhysAddr: region.guestPhysAddrOf(offset),
    hostAddress: region.address + BigInt(offset),
    offset,
    size,
    cause: 'replayed',
    hugePageIndex: page,
    durable: true,
    ...(reason ? { reason } : {}),
  };
}
