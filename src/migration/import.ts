// importLost(): a migration destination makes the source's lost frames lost here. All or nothing:
// the whole manifest is checked against this engine first (manifest.ts, then every frame inside a
// mapped region); a refusal changes nothing. Then the new frames are journaled (cause 'imported')
// and put in the ledger, and only then is memory changed, one huge page at a time
// (native/binding/import.cc): a page holding an imported frame is split with its current bytes kept
// (they are in the file: nothing is poisoned here) and the frame guarded; a page split already gets
// the frame guarded in place; an ineligible region loses the whole huge page, as at the source.
// `lost` events follow after importLost() returned, as the replay's do.
import { SUBPAGE } from '../constants';
import { RasError } from '../errors';
import type { LostEvent } from '../events';
import type { LostCause, LostPage } from '../ledger/ledger';
import type { LostFrame } from '../ledger/records';
import { native, PageState } from '../native';
import { REASON_WORDS, reasonFromCode } from '../policy';
import type { Region } from '../region';
import type { EngineState } from '../pipeline/state';
import { badManifest, hex, parseManifest, type ImportResult, type ParsedRegion } from './manifest';

/** How long one huge page under recovery is waited for before its frames are applied. */
export const IMPORT_WAIT_MS = 10_000;

/** One frame as this engine records it: a 4 KiB frame or a whole huge page of `region`. */
interface Target {
  region: Region;
  offset: number;
  size: number;
}

interface PageWork {
  region: Region;
  page: number;
  whole: boolean;
  subpages: number[];
}

export function importLost(s: EngineState, manifest: unknown): ImportResult {
  const pages = groupByPage(resolve(parseManifest(manifest), [...s.regions.values()]));
  const targets = wholePagesWhole(pages);
  checkNotBusyWhilePaused(pages);
  // Journal first (durable), then the ledger, what is new here (the rest this engine has lost
  // already): a crash from here on replays them as lost. Nothing new: nothing journaled; the pages are
  // still applied, which changes nothing where they are lost already.
  const entries = journalThenLedger(s, targets, 'imported');
  const result: ImportResult = { imported: entries.length, alreadyLost: targets.length - entries.length };
  const events: LostEvent[] = entries.map((e) => ({ region: e.region, guestPhysAddr: e.guestPhysAddr, hostAddress: e.hostAddress, offset: e.offset, size: e.size, cause: 'imported' }));
  const later: (() => void)[] = [];
  for (const w of pages.values()) apply(s, w, later);
  s.idle.defer(() => {
    for (const e of events) s.events.deliver('lost', e);
    for (const f of later) f();
  });
  return result;
}

/**
 * Every frame of the manifest as this engine records it, or ERR_BAD_MANIFEST. A frame must lie
 * inside one mapped region (matched by guest-physical range; names may differ), 4 KiB aligned in it.
 * A whole-huge-page frame is whole huge pages here where it is aligned to this region's huge page
 * size and a multiple of it; else (another huge page size here) its 4 KiB frames. In a region not
 * eligible for recovery (share=on, consumers) a 4 KiB frame costs its whole huge page, as at the source.
 */
function resolve(parsed: ParsedRegion[], mapped: Region[]): Target[] {
  const regions = [...mapped].sort((a, b) => (a.guestPhysAddr < b.guestPhysAddr ? -1 : 1));
  const out: Target[] = [];
  const wholeSeen = new Set<string>();
  for (const mr of parsed) {
    let at = 0; // frames ascend: the search goes on from the region of the frame before
    for (const f of mr.frames) {
      const end = f.guestPhysAddr + BigInt(f.size);
      while (at < regions.length && regions[at].guestPhysAddr + BigInt(regions[at].size) <= f.guestPhysAddr) at++;
      const region = regions[at];
      if (!region || region.guestPhysAddr > f.guestPhysAddr || end > region.guestPhysAddr + BigInt(region.size)) {
        throw badManifest(
          `the frame at ${hex(f.guestPhysAddr)} (${f.size} bytes, region ${JSON.stringify(mr.name)}) is not inside one region this engine maps`,
          { guestPhysAddr: hex(f.guestPhysAddr), size: f.size, region: mr.name },
        );
      }
      const offset = Number(f.guestPhysAddr - region.guestPhysAddr);
      const huge = region.hugePageSize;
      if (offset % SUBPAGE !== 0) throw badManifest(`the frame at ${hex(f.guestPhysAddr)} is not 4 KiB aligned in region ${region.name}`);
      const push = (o: number, size: number): void => {
        if (size < huge && region.eligible) {
          out.push({ region, offset: o, size });
          return;
        }
        const page = o - (o % huge);
        const key = `${region.id}:${page}`;
        if (wholeSeen.has(key)) return;
        wholeSeen.add(key);
        out.push({ region, offset: page, size: huge });
      };
      if (f.size === SUBPAGE) push(offset, SUBPAGE);
      else if (offset % huge === 0 && f.size % huge === 0) for (let o = offset; o < offset + f.size; o += huge) push(o, huge);
      else for (let o = offset; o < offset + f.size; o += SUBPAGE) push(o, SUBPAGE);
    }
    // The next manifest region may lie before this one: search from the start again.
    at = 0;
  }
  return out;
}

function groupByPage(targets: Target[]): Map<string, PageWork> {
  const pages = new Map<string, PageWork>();
  for (const t of targets) {
    const page = Math.floor(t.offset / t.region.hugePageSize);
    const key = `${t.region.id}:${page}`;
    let w = pages.get(key);
    if (!w) pages.set(key, (w = { region: t.region, page, whole: false, subpages: [] }));
    if (t.size >= t.region.hugePageSize) w.whole = true;
    else w.subpages.push((t.offset - page * t.region.hugePageSize) / SUBPAGE);
  }
  return pages;
}

/**
 * The targets page by page; a huge page whose every 4 KiB frame is imported (distinct: the manifest's
 * frames are) is lost whole, one entry: nothing to split it for, and a restart replays it as such.
 */
function wholePagesWhole(pages: Map<string, PageWork>): Target[] {
  const out: Target[] = [];
  for (const w of pages.values()) {
    const huge = w.region.hugePageSize;
    if (w.whole || w.subpages.length >= huge / SUBPAGE) {
      w.whole = true;
      out.push({ region: w.region, offset: w.page * huge, size: huge });
    } else for (const sp of w.subpages) out.push({ region: w.region, offset: w.page * huge + sp * SUBPAGE, size: SUBPAGE });
  }
  return out;
}

/** Journal first (durable, or retried: durable.ts), then the ledger; the entries, for their events. */
function journalThenLedger(s: EngineState, items: Target[], cause: LostCause, reason?: string): LostPage[] {
  const fresh = items.filter((t) => !s.ledger.covers(t.region.name, t.offset, t.size));
  const wallTime = new Date().toISOString();
  const frames: LostFrame[] = new Array(fresh.length);
  const entries: LostPage[] = new Array(fresh.length);
  for (let i = 0; i < fresh.length; i++) {
    const t = fresh[i];
    const guestPhysAddr = t.region.guestPhysAddrOf(t.offset);
    frames[i] = { region: t.region.name, guestPhysAddr, size: t.size, offset: t.offset, cause, wallTime };
    entries[i] = {
      region: t.region.name,
      guestPhysAddr,
      hostAddress: t.region.address + BigInt(t.offset),
      offset: t.offset,
      size: t.size,
      cause,
      hugePageIndex: Math.floor(t.offset / t.region.hugePageSize),
      durable: false,
    };
    if (reason !== undefined) {
      frames[i].reason = reason;
      entries[i].reason = reason;
    }
  }
  if (fresh.length > 0) s.durable.append(frames, entries);
  for (const e of entries) s.ledger.add(e);
  return entries;
}

/** A paused engine leaves a page under recovery as it is: refused before anything is journaled. */
function checkNotBusyWhilePaused(pages: Map<string, PageWork>): void {
  if (!native.counters().paused) return;
  const states = new Map<number, Uint8Array>();
  for (const w of pages.values()) {
    let st = states.get(w.region.id);
    if (!st) states.set(w.region.id, (st = native.pageStates(w.region.id)));
    if (st[w.page] === PageState.Pending || st[w.page] === PageState.Recovering) {
      throw new RasError(
        'ERR_ENGINE_PAUSED',
        `importLost: huge page ${w.page} of region ${w.region.name} is under recovery and the engine is paused: resume() first`,
        { region: w.region.name, hugePageIndex: w.page },
      );
    }
  }
}

/** One huge page: the native side splits, guards in place or loses it whole. */
function apply(s: EngineState, w: PageWork, later: (() => void)[]): void {
  const { region, page } = w;
  const hugeOffset = page * region.hugePageSize;
  const out = native.importFrames(region.id, page, w.subpages, w.whole, IMPORT_WAIT_MS);
  if (out.busy) {
    const err = new RasError(
      'ERR_PAGE_BUSY',
      `importLost: huge page ${page} of region ${region.name} stayed under recovery for ${IMPORT_WAIT_MS} ms: its imported frames are recorded but not guarded yet`,
      { region: region.name, hugePageIndex: page },
    );
    later.push(() => s.events.reportError(err));
    return;
  }
  if (out.splitFailed) {
    // The split (a read of the file, replacement memory) failed: the whole huge page is lost here.
    const reason = reasonFromCode(out.reason);
    journalThenLedger(s, [{ region, offset: hugeOffset, size: region.hugePageSize }], 'refused', reason);
    const message = REASON_WORDS[reason] + (out.errno ? ` (${out.syscall ?? '?'}: errno ${-out.errno})` : '');
    const gpa = region.guestPhysAddrOf(hugeOffset);
    later.push(() =>
      s.events.deliver('refused', { region: region.name, hugePageIndex: page, reason, message, hugePageGuestPhysAddr: gpa, size: region.hugePageSize, ...(out.errno ? { errno: out.errno, syscall: out.syscall } : {}) }),
    );
    return;
  }
  // A split reads the file: a subpage the read could not get is lost here too (a loss of this host).
  const asked = new Set(w.subpages);
  const extra = w.whole ? [] : out.lostSubpages.filter((sp) => !asked.has(sp)).map((sp) => hugeOffset + sp * SUBPAGE);
  for (const e of journalThenLedger(s, extra.map((o) => ({ region, offset: o, size: SUBPAGE })), 'recovered')) {
    const ev: LostEvent = { region: e.region, guestPhysAddr: e.guestPhysAddr, hostAddress: e.hostAddress, offset: e.offset, size: e.size, cause: 'recovered' };
    later.push(() => s.events.deliver('lost', ev));
  }
  if (out.errno) {
    const err = new RasError(
      'ERR_MEMORY_FAULT',
      `importLost: guarding the imported frames of huge page ${page} of region ${region.name} failed (${out.syscall}: errno ${-out.errno})`,
      { region: region.name, hugePageIndex: page, errno: out.errno, syscall: out.syscall },
    );
    later.push(() => s.events.reportError(err));
  }
}
