// Replay: after a restart, the frames the journal says are lost become inaccessible again when their
// region is mapped, before the guest can use them, and are reported (cause 'replayed'). The memory is
// protected and the ledger has the losses when mapRegion() returns; the `lost` events come after it
// returned (setImmediate), so listeners attached after mapRegion() get them.
//
// A huge page that was split before the restart had its current data in private memory, gone with
// the old process; the file holds it as of the poison. Only a valid handover (ledger/handover.ts)
// says the file is current: then the page is re-split from the file and only its lost frames stay
// lost. Without one the whole huge page is stale: it is kept inaccessible and reported (cause
// 'stale'), never presented as current; resetRegion() gives it back as fresh memory (a cold boot).
import { SUBPAGE } from '../constants';
import * as fs from 'node:fs';
import type { HandedOverPage } from '../ledger/handover';
import { bootId } from '../ledger/lock';
import { identityChange, type RegionIdentity } from '../ledger/records';
import type { LostPage } from '../ledger/ledger';
import type { LostFrame } from '../ledger/records';
import { native } from '../native';
import type { Region } from '../region';
import type { LostEvent } from '../events';
import type { EngineState } from './state';

export const STALE_REASON =
  'split before the restart and not handed over (prepareHandover): the file holds this memory as of the poison, not its current data';

/**
 * The journal's losses of a region apply to this memory only if it is the same memory: the same boot
 * of the host and the same backing file. Else they are history (journalReplay.history).
 */
export function checkIdentity(s: EngineState, name: string, file: string, mapped: { dev: number; ino: number }): void {
  let birthMs = 0;
  try {
    birthMs = Math.floor(fs.statSync(file).birthtimeMs);
  } catch {
    /* no birth time: dev and ino only */
  }
  const now: RegionIdentity = { boot: bootId(), dev: mapped.dev, ino: mapped.ino, birthMs };
  const before = s.journal!.noteIdentity(name, now);
  const why = before && identityChange(before, now);
  if (!why || !s.replay) return;
  const kept = s.replay.lost.filter((f) => f.region !== name);
  for (const f of s.replay.lost) if (f.region === name) s.replay.history.push({ ...f, why });
  s.replay.lost.splice(0, s.replay.lost.length, ...kept);
}

/**
 * The valid handovers of region `name` that the replay will use, journaled as used (`resplit`) before
 * the pages are re-split: the successor's private memory diverges from the file from then on. Throws
 * ERR_JOURNAL_WRITE (mapRegion then maps nothing). Returns them by huge page offset.
 */
export function consumeHandovers(s: EngineState, name: string): Map<number, HandedOverPage> {
  const out = new Map<number, HandedOverPage>();
  const replay = s.replay;
  if (!replay) return out;
  const mine = replay.handedOver.filter((h) => h.region === name);
  // Only pages that still have losses here (another boot or file moved them to history: fresh memory).
  const lostPagesOf = new Map<number, Set<number>>(); // page size -> start offsets of pages with losses
  const hasLoss = (h: HandedOverPage): boolean => {
    let set = lostPagesOf.get(h.size);
    if (!set) {
      set = new Set();
      for (const f of replay.lost) if (f.region === name) set.add(f.offset - (f.offset % h.size));
      lostPagesOf.set(h.size, set);
    }
    return set.has(h.offset - (h.offset % h.size));
  };
  const used = mine.filter(hasLoss);
  const wallTime = new Date().toISOString();
  s.journal?.appendResplit(used.map((h) => ({ region: name, guestPhysAddr: h.guestPhysAddr, offset: h.offset, size: h.size, wallTime })));
  replay.handedOver = replay.handedOver.filter((h) => h.region !== name);
  for (const h of used) out.set(h.offset, h);
  return out;
}

export function reprotectFromJournal(s: EngineState, region: Region, handedOver: Map<number, HandedOverPage>): void {
  const frames = s.replay?.lost.filter((f) => f.region === region.name) ?? [];
  if (frames.length === 0) return;
  const events: LostEvent[] = [];
  // Collected now, delivered after mapRegion() returned.
  const report = (offset: number, size: number, cause: 'replayed' | 'stale' = 'replayed'): void => {
    events.push({ region: region.name, guestPhysAddr: region.guestPhysAddrOf(offset), hostAddress: region.address + BigInt(offset), offset, size, cause });
  };
  const byPage = new Map<number, LostFrame[]>();
  for (const f of frames) {
    const page = Math.floor(f.offset / region.hugePageSize);
    const list = byPage.get(page);
    if (list) list.push(f);
    else byPage.set(page, [f]);
  }
  for (const [page, list] of byPage) {
    const whole = list.some((f) => f.size >= region.hugePageSize);
    const hugeOffset = page * region.hugePageSize;
    if (whole || !region.eligible) {
      native.markLost(region.id, page);
      for (const f of list) s.ledger.add(replayedPage(region, f.offset, f.size, page, 'replayed', f.reason));
      report(hugeOffset, region.hugePageSize);
      continue;
    }
    const h = handedOver.get(hugeOffset);
    if (!h || h.lost !== list.length) {
      // No handover, or one that does not hold every lost frame: the file's data is not current.
      markStale(s, region, page, list);
      report(hugeOffset, region.hugePageSize, 'stale');
      continue;
    }
    s.handover.handedOverHugePages++;
    const subpages = list.map((f) => (f.offset - hugeOffset) / SUBPAGE);
    const out = native.recoverNow(region.id, page, subpages);
    const lost = out.ok ? out.lostSubpages.map((sp) => hugeOffset + sp * SUBPAGE) : [hugeOffset];
    for (const o of lost) {
      const size = out.ok ? SUBPAGE : region.hugePageSize;
      s.ledger.add(replayedPage(region, o, size, page, 'replayed'));
      report(o, size);
    }
  }
  s.idle.defer(() => {
    for (const e of events) s.events.deliver('lost', e);
  });
}

function markStale(s: EngineState, region: Region, page: number, list: LostFrame[]): void {
  const hugeOffset = page * region.hugePageSize;
  native.markLost(region.id, page);
  s.ledger.add(replayedPage(region, hugeOffset, region.hugePageSize, page, 'stale', STALE_REASON));
  s.handover.stale.push({
    region: region.name,
    hugePageIndex: page,
    hugePageGuestPhysAddr: region.guestPhysAddrOf(hugeOffset),
    size: region.hugePageSize,
    lostGuestPhysAddrs: list.map((f) => f.guestPhysAddr).sort((a, b) => (a < b ? -1 : a > b ? 1 : 0)),
  });
}

function replayedPage(region: Region, offset: number, size: number, page: number, cause: 'replayed' | 'stale', reason?: string): LostPage {
  return {
    region: region.name,
    guestPhysAddr: region.guestPhysAddrOf(offset),
    hostAddress: region.address + BigInt(offset),
    offset,
    size,
    cause,
    hugePageIndex: page,
    durable: true,
    ...(reason ? { reason } : {}),
  };
}
