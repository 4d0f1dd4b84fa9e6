// The journal's handover records (format version 2) and the rule that decides, on replay, which
// huge pages' data in the backing file is current.
//
// After a split the guest's data lives in private memory; the file's huge page is frozen at the
// poison. A handover (engine.prepareHandover) copies the current data back into a fresh huge page
// of the file and journals, in one append:
//   - `handover`: `{ id, region, guestPhysAddr, offset, size, lost, wallTime }` per huge page
//     (guestPhysAddr/offset of the huge page, size the huge page size, lost: lost 4 KiB frames kept);
//   - `handover-done`: `{ id, pages, wallTime }`: the handover is complete (a torn append has none).
// `handover-abort` `{ id, wallTime }`: the old process resumed the guest (abortHandover): void.
// `resplit` `{ region, guestPhysAddr, offset, size, wallTime }`: a restarted engine re-split that
// huge page from the file: it is private memory again, the handover is used up.
// Version 3: `split` `{ region, guestPhysAddr, offset, size, wallTime }`: the huge page's current data
// lives only in the writer's private memory from now on, with no lost 4 KiB frame to say so (a split
// that lost nothing, a reset that fell back to anonymous memory). Like a lost 4 KiB frame and a
// `resplit`, it makes the page stale for a successor until a complete handover (or a reset) covers it.
//
// The rule: a huge page's file data is current iff its last record is a `handover` of a handover
// that is done and not aborted. Any later record about that huge page (a loss, a reset, a split or
// resplit, another identity of the region) voids it. A page split (a lost 4 KiB frame, `split`,
// `resplit`) and not covered by such a handover since is stale: its current data died with the writer.
import { checkString, isObject, type HandedOverPage, type HandoverPageRecord, type RegionLayout, type SplitPageRecord } from './records';

export type { HandedOverPage, HandoverPageRecord } from './records';

export interface ResplitRecord {
  region: string;
  guestPhysAddr: bigint;
  offset: number;
  size: number;
  wallTime: string;
}

export type HandoverDecoded =
  | { type: 'split'; split: SplitPageRecord }
  | { type: 'handover'; page: HandoverPageRecord }
  | { type: 'handover-done'; id: string; pages: number }
  | { type: 'handover-abort'; id: string }
  | { type: 'resplit'; resplit: ResplitRecord };

/** The record types of format version 2. */
export const V2_TYPES: readonly string[] = ['handover', 'handover-done', 'handover-abort', 'resplit'];
/** The record types of format version 3. */
export const V3_TYPES: readonly string[] = ['split'];

const int = (v: unknown, what: string, min: number): string | undefined =>
  typeof v === 'number' && Number.isSafeInteger(v) && v >= min ? undefined : `${what} must be an integer >= ${min}`;

function pageProblem(r: Record<string, unknown>, what: string): string | undefined {
  if (typeof r.guestPhysAddr !== 'bigint') return `${what}.guestPhysAddr must be a bigint`;
  return (
    checkString(r.region, `${what}.region`) ??
    int(r.offset, `${what}.offset`, 0) ??
    int(r.size, `${what}.size`, 1) ??
    checkString(r.wallTime, `${what}.wallTime`, true)
  );
}

/** A decoded v2 record (guestPhysAddr already a bigint), or why it is bad. */
export function decodeHandover(rec: Record<string, unknown>): HandoverDecoded | string {
  const what = `${String(rec.type)} record`;
  switch (rec.type) {
    case 'handover': {
      const p = checkString(rec.id, `${what}.id`) ?? pageProblem(rec, what) ?? int(rec.lost, `${what}.lost`, 0);
      if (p) return p;
      const { id, region, guestPhysAddr, offset, size, lost, wallTime } = rec as unknown as HandoverPageRecord;
      return { type: 'handover', page: { id, region, guestPhysAddr, offset, size, lost, wallTime } };
    }
    case 'handover-done': {
      const p = checkString(rec.id, `${what}.id`) ?? int(rec.pages, `${what}.pages`, 0) ?? checkString(rec.wallTime, `${what}.wallTime`, true);
      return p ?? { type: 'handover-done', id: rec.id as string, pages: rec.pages as number };
    }
    case 'handover-abort': {
      const p = checkString(rec.id, `${what}.id`) ?? checkString(rec.wallTime, `${what}.wallTime`, true);
      return p ?? { type: 'handover-abort', id: rec.id as string };
    }
    default: {
      const p = pageProblem(rec, what);
      if (p) return p;
      const { region, guestPhysAddr, offset, size, wallTime } = rec as unknown as ResplitRecord;
      const page = { region, guestPhysAddr, offset, size, wallTime };
      return rec.type === 'split' ? { type: 'split', split: page } : { type: 'resplit', resplit: page };
    }
  }
}

export function handoverRecordProblem(v: unknown, what: string): string | undefined {
  if (!isObject(v)) return `${what} must be an object`;
  return checkString(v.id, `${what}.id`) ?? pageProblem(v, what) ?? int(v.lost, `${what}.lost`, 0);
}

const key = (region: string, hugeOffset: number): string => `${region}\u0000${hugeOffset}`;

/** Folds handover-related facts while the journal is replayed (parse.ts), in record order. */
export class HandoverFold {
  private readonly pending = new Map<string, HandoverPageRecord[]>();
  private readonly valid = new Map<string, HandoverPageRecord>();
  /** `split` and `resplit` records not cleared by a reset or another identity since. */
  private readonly splitPages = new Map<string, SplitPageRecord>();
  /** Aborted handover ids: a `handover-done` written after its abort is not trusted. */
  private readonly aborted = new Set<string>();

  constructor(private readonly regions: ReadonlyMap<string, RegionLayout>) {}

  record(d: HandoverDecoded): void {
    if (d.type === 'handover') {
      this.voidPage(d.page.region, d.page.offset);
      this.pending.set(d.page.id, [...(this.pending.get(d.page.id) ?? []), d.page]);
    } else if (d.type === 'handover-done') {
      const pages = this.pending.get(d.id) ?? [];
      this.pending.delete(d.id);
      if (pages.length !== d.pages || this.aborted.has(d.id)) return; // not the handover that was written, or called off: not trusted
      for (const p of pages) this.valid.set(key(p.region, p.offset), p);
    } else if (d.type === 'handover-abort') {
      this.aborted.add(d.id);
      for (const [k, p] of this.valid) if (p.id === d.id) this.valid.delete(k);
    } else {
      // split (v3) and resplit: the page's current data lives in a process's private memory from here on.
      const page = d.type === 'split' ? d.split : d.resplit;
      this.voidPage(page.region, page.offset);
      this.splitPages.set(key(page.region, page.offset), page);
    }
  }

  /** A loss recorded at `offset` of a region (any size): the huge pages it touches are not current. */
  lost(region: string, offset: number, size: number): void {
    const hps = this.regions.get(region)?.hugePageSize;
    if (!hps) return this.voidRegion(region);
    for (let o = offset - (offset % hps); o < offset + size; o += hps) this.voidPage(region, o);
  }

  /** A reset of [guestPhysAddr, +size): its huge pages are fresh memory (a `split` after it says where that is private memory). */
  reset(region: string, guestPhysAddr: bigint, size: number): void {
    const base = this.regions.get(region)?.guestPhysAddr;
    if (base === undefined) return this.voidRegion(region);
    const offset = Number(guestPhysAddr - base);
    this.lost(region, offset, size);
    for (const [k, p] of this.splitPages) if (p.region === region && p.offset >= offset && p.offset + p.size <= offset + size) this.splitPages.delete(k);
  }

  /** The region is other memory from here on (another boot, a recreated file). */
  voidRegion(region: string): void {
    for (const [k, p] of this.valid) if (p.region === region) this.valid.delete(k);
    for (const [k, p] of this.splitPages) if (p.region === region) this.splitPages.delete(k);
  }

  private voidPage(region: string, hugeOffset: number): void {
    if (this.valid.size === 0) return; // the common case on replay: no key built per lost frame
    this.valid.delete(key(region, hugeOffset));
  }

  result(): HandedOverPage[] {
    return [...this.valid.values()];
  }

  /** Huge pages split and not covered by a valid handover since (stale for a successor). */
  split(): SplitPageRecord[] {
    return [...this.splitPages].filter(([k]) => !this.valid.has(k)).map(([, p]) => p);
  }
}
