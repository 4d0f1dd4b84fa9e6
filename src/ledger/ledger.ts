// The ledger of lost guest memory: per region, which 4 KiB frames (or whole huge pages) are gone.
// In memory only; the journal (file.ts) is its durable copy, written first.

/**
 * recovered: lost while its huge page was split; refused: whole huge page lost; split-poison: a 4 KiB
 * page lost in memory that was already split; replayed: known lost from the journal after a restart;
 * stale: after a restart, a whole huge page that was split before it and not handed over: its data in
 * the file is as of the poison, not current, so it is kept inaccessible (never journaled: replay
 * decides it from the journal each time).
 */
export type LostCause = 'recovered' | 'refused' | 'split-poison' | 'replayed' | 'stale';
export const LOST_CAUSES: readonly LostCause[] = ['recovered', 'refused', 'split-poison', 'replayed', 'stale'];

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

export class Ledger {
  private readonly regions = new Map<string, Map<number, LostPage>>();

  /** Records a loss; false if that memory was already recorded. */
  add(page: LostPage): boolean {
    let m = this.regions.get(page.region);
    if (!m) {
      m = new Map();
      this.regions.set(page.region, m);
    }
    for (const p of m.values()) {
      if (page.offset >= p.offset && page.offset + page.size <= p.offset + p.size) return false;
    }
    // A whole lost huge page absorbs the subpages recorded in it.
    for (const [off, p] of m) if (p.offset >= page.offset && p.offset + p.size <= page.offset + page.size) m.delete(off);
    m.set(page.offset, page);
    return true;
  }

  contains(region: string, offset: number): boolean {
    const m = this.regions.get(region);
    if (!m) return false;
    for (const p of m.values()) if (offset >= p.offset && offset < p.offset + p.size) return true;
    return false;
  }

  /** Forgets the losses inside [offset, offset+size) of a region; returns how many. */
  clearRange(region: string, offset: number, size: number): number {
    const m = this.regions.get(region);
    if (!m) return 0;
    let n = 0;
    for (const [off, p] of m) {
      if (p.offset >= offset && p.offset + p.size <= offset + size) {
        m.delete(off);
        n++;
      }
    }
    return n;
  }

  forget(region: string): void {
    this.regions.delete(region);
  }

  all(): LostPage[] {
    const out: LostPage[] = [];
    for (const m of this.regions.values()) out.push(...m.values());
    return out.sort((a, b) => (a.guestPhysAddr < b.guestPhysAddr ? -1 : a.guestPhysAddr > b.guestPhysAddr ? 1 : 0));
  }
}
