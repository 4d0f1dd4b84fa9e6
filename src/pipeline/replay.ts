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
import { RasError } from '../errors';
import * as fs from 'node:fs';
import type { HandedOverPage } from '../ledger/handover';
import { bootId } from '../ledger/lock';
import { identityChange, type RegionIdentity } from '../ledger/records';
import type { LostPage } from '../ledger/ledger';
import type { LostFrame } from '../ledger/records';
import { native, PageState, type NativeRecoverOutcome } from '../native';
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
  const birthMs = birthMsOf(file); // 0 without a birth time: dev and ino only
  const now: RegionIdentity = { boot: bootId(), dev: mapped.dev, ino: mapped.ino, birthMs };
  const before = s.journal!.noteIdentity(name, now);
  const why = before && identityChange(before, now);
  if (!why || !s.replay) return;
  const kept = s.replay.lost.filter((f) => f.region !== name);
  for (const f of s.replay.lost) if (f.region === name) s.replay.history.push({ ...f, why });
  s.replay.lost.splice(0, s.replay.lost.length, ...kept);
  s.replay.split = s.replay.split.filter((p) => p.region !== name); // fresh memory: nothing of it is private
}

/**
 * The journal knows memory by name, and by file: the same memory (this boot, this file, an
 * overlapping file range) mapped under another name while the journal holds losses, split pages or a
 * handover for it under its old name would read as healthy. Refused (ERR_JOURNAL_REGION_RENAMED),
 * before anything is journaled; with nothing outstanding under the old name, a new name is fine.
 */
export function checkRenamed(s: EngineState, name: string, file: string, offset: number, size: number, mapped: { dev: number; ino: number }): void {
  const replay = s.replay;
  if (!replay) return;
  const now = { boot: bootId(), dev: mapped.dev, ino: mapped.ino, birthMs: birthMsOf(file) };
  for (const [other, id] of replay.identities) {
    if (other === name || identityChange(id, now)) continue;
    const layout = replay.regions.get(other);
    if (!layout || !(layout.offset < offset + size && offset < layout.offset + layout.size)) continue;
    const pending =
      replay.lost.filter((f) => f.region === other).length +
      replay.handedOver.filter((h) => h.region === other).length +
      (replay.split ?? []).filter((p) => p.region === other).length;
    if (pending === 0) continue;
    throw new RasError(
      'ERR_JOURNAL_REGION_RENAMED',
      `region ${name}: the journal holds ${pending} record(s) of lost, split or handed-over memory of this file ` +
        `(${file}, device ${mapped.dev}, inode ${mapped.ino}) under the region name "${other}": map it as "${other}" ` +
        `(the journal names regions), or give it back as fresh memory under that name first (resetRegion)`,
      { region: name, journalRegion: other, path: file },
    );
  }
}

/**
 * The file's birth time, or 0 where it has none. Without statx (an old kernel, a seccomp filter) Node
 * reports the change time as the birth time, and the engine's own ftruncate/fallocate changes that:
 * a birth time equal to the change time is not trusted (0: the identity is boot, dev and inode).
 */
export function birthMsOf(file: string): number {
  try {
    const st = fs.statSync(file);
    return st.birthtimeMs === st.ctimeMs ? 0 : Math.floor(st.birthtimeMs);
  } catch {
    return 0;
  }
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
  const split = s.replay?.split.filter((p) => p.region === region.name && p.offset + p.size <= region.size) ?? [];
  if (frames.length === 0 && split.length === 0) return;
  const events: LostEvent[] = [];
  // Collected now, delivered after mapRegion() returned.
  const report = (offset: number, size: number, cause: 'replayed' | 'stale' = 'replayed', at?: LostPage): void => {
    // The addresses of the ledger's entry for it where there is one: two bigints less per frame.
    const guestPhysAddr = at ? at.guestPhysAddr : region.guestPhysAddrOf(offset);
    const hostAddress = at ? at.hostAddress : region.address + BigInt(offset);
    events.push({ region: region.name, guestPhysAddr, hostAddress, offset, size, cause });
  };
  const byPage = new Map<number, LostFrame[]>();
  for (const f of frames) {
    const page = Math.floor(f.offset / region.hugePageSize);
    const list = byPage.get(page);
    if (list) list.push(f);
    else byPage.set(page, [f]);
  }
  // Split (private memory) with no lost frame, and no complete handover since: its file data is stale.
  for (const p of split) {
    const page = Math.floor(p.offset / region.hugePageSize);
    if (byPage.has(page) || !region.eligible) continue;
    markStale(s, region, page, []);
    report(page * region.hugePageSize, region.hugePageSize, 'stale');
  }
  // Handed-over pages are re-split from the file in one native call, several at once; the reports
  // keep the journal's page order.
  const resplit: { page: number; subpages: number[] }[] = [];
  const order: (() => void)[] = [];
  for (const [page, list] of byPage) {
    const whole = list.some((f) => f.size >= region.hugePageSize);
    const hugeOffset = page * region.hugePageSize;
    if (whole || !region.eligible) {
      native.markLost(region.id, page);
      for (const f of list) s.ledger.add(replayedPage(region, f.offset, f.size, page, 'replayed', f.reason));
      order.push(() => report(hugeOffset, region.hugePageSize));
      continue;
    }
    const h = handedOver.get(hugeOffset);
    if (!h || h.lost !== list.length) {
      // No handover, or one that does not hold every lost frame: the file's data is not current.
      markStale(s, region, page, list);
      order.push(() => report(hugeOffset, region.hugePageSize, 'stale'));
      continue;
    }
    s.handover.handedOverHugePages++;
    const at = resplit.length;
    resplit.push({ page, subpages: list.map((f) => (f.offset - hugeOffset) / SUBPAGE) });
    order.push(() => resplitDone(s, region, outcomes[at], report));
  }
  const outcomes = resplit.length > 0 ? native.recoverMany(region.id, resplit.map((r) => r.page), resplit.map((r) => r.subpages)) : [];
  const busy = outcomes.find((o) => o.busy);
  for (const fn of order) fn();
  if (busy) throw new RasError('ERR_PAGE_BUSY', `region ${region.name}: huge page ${busy.page} is already being handled`, { region: region.name, hugePageIndex: busy.page });
  s.idle.defer(() => {
    for (const e of events) s.events.deliver('lost', e);
  });
}

/** A re-split page's losses into the ledger and the reports (the whole page where the split failed). */
function resplitDone(
  s: EngineState,
  region: Region,
  out: NativeRecoverOutcome & { page: number; busy?: boolean },
  report: (offset: number, size: number, cause: 'replayed', at: LostPage) => void,
): void {
  if (out.busy) return;
  const page = out.page;
  const hugeOffset = page * region.hugePageSize;
  const lost = out.ok ? out.lostSubpages.map((sp) => hugeOffset + sp * SUBPAGE) : [hugeOffset];
  const size = out.ok ? SUBPAGE : region.hugePageSize;
  for (const o of lost) {
    const entry = replayedPage(region, o, size, page, 'replayed');
    s.ledger.add(entry);
    report(o, size, 'replayed', entry);
  }
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
  const p: LostPage = {
    region: region.name,
    guestPhysAddr: region.guestPhysAddrOf(offset),
    hostAddress: region.address + BigInt(offset),
    offset,
    size,
    cause,
    hugePageIndex: page,
    durable: true,
  };
  if (reason) p.reason = reason; // set, not spread: no object copied per replayed frame
  return p;
}

/**
 * unmapRegion(): what this life knows of the region joins the journal's view (s.replay), so that a
 * later mapRegion() of it in the same engine applies it as a restart would: this life's losses, and
 * its split pages (their private memory goes with the unmap: the file holds them as of the split).
 * Everything added is in the journal already (or waits for it); this only keeps the view current.
 */
export function carryOver(s: EngineState, region: Region): void {
  const replay = s.replay;
  if (!replay) return;
  const has = new Set(replay.lost.filter((f) => f.region === region.name).map((f) => `${f.offset}:${f.size}`));
  for (const p of s.ledger.all()) {
    if (p.region !== region.name || p.cause === 'stale' || p.cause === 'replayed' || has.has(`${p.offset}:${p.size}`)) continue;
    replay.lost.push({ region: p.region, guestPhysAddr: p.guestPhysAddr, size: p.size, offset: p.offset, cause: p.cause, wallTime: '', ...(p.reason ? { reason: p.reason } : {}) });
  }
  const states = native.pageStates(region.id);
  const split = new Set(replay.split.filter((p) => p.region === region.name).map((p) => p.offset));
  for (let page = 0; page < states.length; page++) {
    const offset = page * region.hugePageSize;
    if (states[page] !== PageState.Split || split.has(offset)) continue;
    replay.split.push({ region: region.name, guestPhysAddr: region.guestPhysAddrOf(offset), offset, size: region.hugePageSize, wallTime: '' });
  }
}

/** resetRegion(): the range is fresh memory; the journal's view forgets what it had there. */
export function forgetRange(s: EngineState, region: string, offset: number, size: number): void {
  const replay = s.replay;
  if (!replay) return;
  const inside = (o: number, n: number) => o >= offset && o + n <= offset + size;
  replay.lost = replay.lost.filter((f) => f.region !== region || !inside(f.offset, f.size));
  replay.split = replay.split.filter((p) => p.region !== region || !inside(p.offset, p.size));
}

/** A record skipped in the journal may have been a loss: an `error` event, after open() returned. */
export function reportBadRecords(s: EngineState): void {
  const bad = s.replay?.warnings.filter((w) => w.code === 'ERR_JOURNAL_BAD_RECORD') ?? [];
  if (bad.length === 0) return;
  const path = s.journal?.path;
  const err = new RasError(
    'ERR_JOURNAL_BAD_RECORD',
    `journal ${path}: ${bad.length} bad record(s) skipped (the first at byte ${bad[0].byteOffset}): a loss recorded there is not known; ` +
      'check the journal (hugetlb-ras journal PATH) and the memory it names',
    { path, warnings: bad },
  );
  s.idle.defer(() => s.events.reportError(err));
}
