// Handover (live update): before the VMM hands the backing files to its successor, make every split
// huge page's current data durable in its file, and journal that it is (ledger/handover.ts has the
// records and the rule the restart applies). The mechanism is native (native/split/handover.h); the
// policy, the journal and the state of the handover are here.
//
// The rule for writes after the handover: from prepareHandover() to close(), the guest must not run
// in this process. The engine refuses what it sees (a guarded region.write() to a handed-over page,
// resetRegion, mapRegion, a second prepareHandover: ERR_HANDED_OVER); a memory error is still
// recovered, and its journal record voids the handover of its huge page. To run the guest here
// again, abortHandover() first: it journals that the handover is void.
import { randomUUID } from 'node:crypto';
import { SUBPAGE } from '../constants';
import { RasError } from '../errors';
import { native, PageState } from '../native';
import type { Region } from '../region';
import type { EngineState } from './state';

export interface HandedOverHugePage {
  region: string;
  hugePageIndex: number;
  hugePageGuestPhysAddr: bigint;
  /** Healthy bytes copied from the live memory into the fresh huge page of the file. */
  bytesCopied: number;
  /** Lost 4 KiB frames: zero in the file, still lost (journaled) for the successor. */
  lostGuestPhysAddrs: bigint[];
}

export interface NotHandedOverHugePage {
  region: string;
  hugePageIndex: number;
  hugePageGuestPhysAddr: bigint;
  /**
   * ERR_NO_HUGE_PAGE: the pool had no free huge page (nothing was changed); ERR_HANDOVER_FAILED: a
   * syscall failed or a new memory error hit the copy. The successor finds this page stale.
   */
  code: 'ERR_NO_HUGE_PAGE' | 'ERR_HANDOVER_FAILED';
  message: string;
  errno?: number;
  syscall?: string;
  /** The file's huge page was already punched out when it failed: the file holds a hole there. */
  punched: boolean;
}

export interface HandoverResult {
  /** Journaled with this id (the `handover` records). */
  id: string;
  handedOver: HandedOverHugePage[];
  notHandedOver: NotHandedOverHugePage[];
  bytesCopied: number;
}

export function handedOver(s: EngineState, what: string): RasError {
  return new RasError('ERR_HANDED_OVER', `${what}: the engine was handed over (prepareHandover); close() it, or abortHandover() to run the guest here again`, {
    handoverId: s.handover.id,
  });
}

export function checkNotHandedOver(s: EngineState, what: string): void {
  if (s.handover.id !== undefined) throw handedOver(s, what);
}

export async function prepareHandover(s: EngineState, whenIdle: () => Promise<void>): Promise<HandoverResult> {
  checkNotHandedOver(s, 'prepareHandover');
  const journal = s.journal;
  if (!journal)
    throw new RasError('ERR_NO_JOURNAL', 'prepareHandover needs a journal (journalPath): without one a successor cannot know which frames are lost');
  const c = native.counters();
  if (c.paused && c.processed < c.captured) throw new RasError('ERR_ENGINE_PAUSED', 'reports are waiting: resume() the engine before a handover');
  const id = randomUUID();
  s.handover.id = id; // from here on: handed over (a second call, a reset, a mapRegion are refused)
  try {
    await whenIdle();
    // abortHandover() while this waited: the abort wins (it is journaled already); nothing is done.
    if (s.handover.id !== id)
      throw new RasError('ERR_HANDOVER_ABORTED', 'prepareHandover: abortHandover() was called while it waited; nothing was handed over', { handoverId: id });
    if (journal.isClosed) throw new RasError('ERR_ENGINE_CLOSED', 'prepareHandover: the engine was closed while it waited; nothing was handed over');
    // Lost frames the journal does not hold yet must be in it before a handover that keeps them lost:
    // else the successor would find zeros in the file where they were, and no record of the loss.
    if (!s.durable.flushNow())
      throw new RasError(
        'ERR_JOURNAL_WRITE',
        `prepareHandover: ${s.durable.stats().notDurable} lost frame(s) or split page(s) are not in the journal ${journal.path} yet ` +
          '(it cannot be written: see the error events); nothing was handed over',
        { path: journal.path, notDurable: s.durable.stats().notDurable },
      );
    const result: HandoverResult = { id, handedOver: [], notHandedOver: [], bytesCopied: 0 };
    const regions = [...s.regions.values()].filter((r) => r.eligible); // shared memory is never punched
    const done: [Region, HandedOverHugePage][] = [];
    for (const region of regions) for (const p of handOverRegion(region, result)) done.push([region, p]);
    journal.appendHandover(
      id,
      done.map(([region, p]) => ({
        region: region.name,
        guestPhysAddr: p.hugePageGuestPhysAddr,
        offset: p.hugePageIndex * region.hugePageSize,
        size: region.hugePageSize,
        lost: p.lostGuestPhysAddrs.length,
      })),
    );
    for (const [region, p] of done) region.handedOverPages.add(p.hugePageIndex);
    return result;
  } catch (err) {
    if (s.handover.id === id) s.handover.id = undefined; // not handed over: the successor finds the split pages stale
    throw err;
  }
}

/** The old process runs the guest again: the handover is void (journaled first). */
export function abortHandover(s: EngineState): void {
  const id = s.handover.id;
  if (id === undefined) throw new RasError('ERR_INVALID_ARG', 'abortHandover: there is no handover to abort (prepareHandover was not called, or was aborted)');
  s.journal?.appendHandoverAbort(id); // throws ERR_JOURNAL_WRITE: then the engine stays handed over
  s.handover.id = undefined;
  for (const r of s.regions.values()) r.handedOverPages.clear();
}

/** Hands over the region's split pages into `result`; returns those handed over. */
function handOverRegion(region: Region, result: HandoverResult): HandedOverHugePage[] {
  const mine: HandedOverHugePage[] = [];
  const states = native.pageStates(region.id);
  for (let page = 0; page < states.length; page++) {
    if (states[page] !== PageState.Split) continue;
    const hugeOffset = page * region.hugePageSize;
    const base = { region: region.name, hugePageIndex: page, hugePageGuestPhysAddr: region.guestPhysAddrOf(hugeOffset) };
    const r = native.handoverPage(region.id, page);
    if (r.skipped) continue;
    if (r.ok) {
      const lost = (r.lostSubpages ?? []).map((sp) => region.guestPhysAddrOf(hugeOffset + sp * SUBPAGE));
      const p = { ...base, bytesCopied: r.bytes ?? 0, lostGuestPhysAddrs: lost };
      result.handedOver.push(p);
      mine.push(p);
      result.bytesCopied += r.bytes ?? 0;
      continue;
    }
    const code = r.code ?? 'ERR_HANDOVER_FAILED';
    const why =
      code === 'ERR_NO_HUGE_PAGE'
        ? `no free huge page of ${region.hugePageSize} bytes in the pool (HugePages_Free)${r.punched ? '; the file page was punched: it holds a hole' : ': nothing was changed'}`
        : `${r.syscall ?? '?'} failed (errno ${r.errno ?? 0})${r.punched ? '; the file page was punched: it holds a hole' : ''}`;
    result.notHandedOver.push({
      ...base,
      code,
      message: `region ${region.name} huge page ${page} not handed over: ${why}; a successor finds its data stale`,
      ...(r.errno ? { errno: r.errno } : {}),
      ...(r.syscall ? { syscall: r.syscall } : {}),
      punched: r.punched ?? false,
    });
  }
  return mine;
}
