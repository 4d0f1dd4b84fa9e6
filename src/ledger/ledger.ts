// The ledger of lost guest memory: per region, which 4 KiB frames (or whole huge pages) are gone.
// In memory only; the journal (file.ts) is its durable copy, written first.

/**
 * recovered: lost while its huge page was split; refused: whole huge page lost; split-poison: a 4 KiB
 * page lost in memory that was already split; replayed: known lost from the journal after a restart;
 * stale: after a restart, a whole huge page that was split before it and not handed over: its data in
 * the file is as of the poison, not current, so it is kept inaccessible (never journaled: replay
 * decides it from the journal each time); imported: lost at a migration's source, made lost here by
 * importLost() (its bytes are healthy here: guarded, never poisoned).
 */
export type LostCause = 'recovered' | 'refused' | 'split-poison' | 'replayed' | 'stale' | 'imported';
export const LOST_CAUSES: readonly LostCause[] = ['recovered', 'refused', 'split-poison', 'replayed', 'stale', 'imported'];

export interface LostPage {
  region: string;
  guestPhysAddr: bigint;
  hostAddress: bigint;
  offset: number;
  /** 4096 for a lost subpage, the huge page size for a refused huge page. */
  size: number;
  cause: LostCause;
  reason?: string;
  hugePageIndex: number;
  /**
   * The journal holds this loss (it survives a restart of the VMM). false without a journal, or while
   * the journal cannot be written (full disk, read-only file): the engine retries the write and sets it
   * to true once the journal took it; `stats().journal.notDurable` counts those waiting.
   */
  durable: boolean;
}

/**
 * Entries are grouped by GROUP bytes of region offset (the smallest huge page size on x86), and kept
 * by exact offset within a group, so every operation touches only the groups its range covers:
 * add, contains and clearRange cost O(1) per frame (a 1 GiB range: its 512 groups), never a scan of
 * the region's list. `sizes` holds the entry sizes in use (4 KiB and the huge page size), which is
 * where a covering entry can start.
 */
const GROUP = 2 * 1024 * 1024;

interface RegionLosses {
  groups: Map<number, Map<number, LostPage>>;
  sizes: Map<number, number>; // entry size -> how many entries of that size
  count: number;
}

export class Ledger {
  private readonly regions = new Map<string, RegionLosses>();

  /** Records a loss; false if that memory was already recorded. */
  add(page: LostPage): boolean {
    let m = this.regions.get(page.region);
    if (!m) {
      m = { groups: new Map(), sizes: new Map(), count: 0 };
      this.regions.set(page.region, m);
    }
    if (this.covering(m, page.offset, page.size)) return false;
    // A whole lost huge page absorbs the subpages recorded in it (only a bigger entry can).
    if ([...m.sizes.keys()].some((s) => s < page.size)) this.removeInside(m, page.offset, page.size);
    const g = Math.floor(page.offset / GROUP);
    let group = m.groups.get(g);
    if (!group) m.groups.set(g, (group = new Map()));
    group.set(page.offset, page);
    m.sizes.set(page.size, (m.sizes.get(page.size) ?? 0) + 1);
    m.count++;
    return true;
  }

  contains(region: string, offset: number): boolean {
    const m = this.regions.get(region);
    return m ? this.covering(m, offset, 1) !== undefined : false;
  }

  /** True if one entry holds all of [offset, offset+size) of a region. */
  covers(region: string, offset: number, size: number): boolean {
    const m = this.regions.get(region);
    return m ? this.covering(m, offset, size) !== undefined : false;
  }

  /** Forgets the losses inside [offset, offset+size) of a region; returns how many. */
  clearRange(region: string, offset: number, size: number): number {
    const m = this.regions.get(region);
    return m ? this.removeInside(m, offset, size) : 0;
  }

  forget(region: string): void {
    this.regions.delete(region);
  }

  /** How many losses are recorded (for a region, or in all). */
  count(region?: string): number {
    if (region !== undefined) return this.regions.get(region)?.count ?? 0;
    let n = 0;
    for (const m of this.regions.values()) n += m.count;
    return n;
  }

  /** A region's losses, ascending by offset. */
  ofRegion(region: string): LostPage[] {
    const m = this.regions.get(region);
    const out: LostPage[] = [];
    if (m) for (const g of m.groups.values()) for (const p of g.values()) out.push(p);
    return out.sort((a, b) => a.offset - b.offset);
  }

  all(): LostPage[] {
    const out: LostPage[] = [];
    for (const m of this.regions.values()) for (const g of m.groups.values()) for (const p of g.values()) out.push(p);
    return out.sort((a, b) => (a.guestPhysAddr < b.guestPhysAddr ? -1 : a.guestPhysAddr > b.guestPhysAddr ? 1 : 0));
  }

  /**
   * The entry that holds all of [offset, offset+size), if one does. Entries start at a multiple of
   * their size (a 4 KiB frame, a huge page of the region), as the engine and the journal write them.
   */
  private covering(m: RegionLosses, offset: number, size: number): LostPage | undefined {
    for (const s of m.sizes.keys()) {
      if (s < size) continue;
      const start = offset - (offset % s);
      const p = m.groups.get(Math.floor(start / GROUP))?.get(start);
      if (p && p.size === s && offset + size <= p.offset + p.size) return p;
    }
    return undefined;
  }

  private removeInside(m: RegionLosses, offset: number, size: number): number {
    let n = 0;
    const last = Math.floor((offset + size - 1) / GROUP);
    for (let gi = Math.floor(offset / GROUP); gi <= last; gi++) {
      const g = m.groups.get(gi);
      if (!g) continue;
      for (const [off, p] of g) {
        if (p.offset >= offset && p.offset + p.size <= offset + size) {
          g.delete(off);
          const c = (m.sizes.get(p.size) ?? 1) - 1;
          if (c > 0) m.sizes.set(p.size, c);
          else m.sizes.delete(p.size);
          m.count--;
          n++;
        }
      }
      if (g.size === 0) m.groups.delete(gi);
    }
    return n;
  }
}
