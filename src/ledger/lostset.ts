// The net set of lost frames while a journal is replayed: journal order, one entry per frame
// (region, guest physical address, size), a reset or a change of identity removing what it covers.
// Keyed without a string per frame (a restart replaying 100 000 frames pays for every allocation).
import type { LostFrame } from './records';

/** Lost frames by region and 2 MiB of guest-physical address, so a reset visits only what it covers. */
const BUCKET = 21n;

const SAFE = BigInt(Number.MAX_SAFE_INTEGER);
const key = (gpa: bigint): number | bigint => (gpa <= SAFE ? Number(gpa) : gpa);

const GROUP = 2 * 1024 * 1024;
const FRAME = 4096;

/**
 * Guest physical addresses held (of one region and frame size): a bit per 4 KiB-aligned address in
 * groups of 2 MiB, no Map entry per frame (a restart replays 100 000 of them); others in a Set.
 */
class AddrSet {
  private readonly groups = new Map<number, Uint32Array>();
  private readonly other = new Set<number | bigint>();

  /** Adds the address; false if it was held already. */
  add(k: number | bigint): boolean {
    if (typeof k !== 'number' || k % FRAME !== 0) {
      if (this.other.has(k)) return false;
      this.other.add(k);
      return true;
    }
    const g = Math.floor(k / GROUP);
    const i = (k - g * GROUP) / FRAME;
    let bits = this.groups.get(g);
    if (!bits) this.groups.set(g, (bits = new Uint32Array(GROUP / FRAME / 32)));
    const m = 1 << (i & 31);
    if (bits[i >>> 5] & m) return false;
    bits[i >>> 5] |= m;
    return true;
  }

  delete(k: number | bigint): void {
    if (typeof k !== 'number' || k % FRAME !== 0) {
      this.other.delete(k);
      return;
    }
    const g = Math.floor(k / GROUP);
    const i = (k - g * GROUP) / FRAME;
    const bits = this.groups.get(g);
    if (bits) bits[i >>> 5] &= ~(1 << (i & 31));
  }
}

export class LostSet {
  /** region + size -> the guest physical addresses held (a number where it is exact: a bigint hashes slowly) */
  private readonly byKey = new Map<string, AddrSet>();
  /** Every frame added, in journal order; those removed since are in `removed`. */
  private readonly order: LostFrame[] = [];
  private readonly removed = new Set<LostFrame>();
  /** Built at the first reset (a journal of losses alone never needs them), kept current from then on. */
  private buckets: Map<string, Set<LostFrame>> | undefined;

  /** The last map asked for: a journal's frames come region by region (no key string per frame). */
  private last: { region: string; size: number; map: AddrSet } | undefined;

  private mapOf(region: string, size: number, create: boolean): AddrSet | undefined {
    const last = this.last;
    if (last && last.region === region && last.size === size) return last.map;
    const k = `${region}\u0000${size}`;
    let m = this.byKey.get(k);
    if (!m && create) this.byKey.set(k, (m = new AddrSet()));
    if (m) this.last = { region, size, map: m };
    return m;
  }

  /** Adds the frame unless the same frame is held already (a frame recorded twice counts once). */
  add(f: LostFrame): void {
    const m = this.mapOf(f.region, f.size, true) as AddrSet;
    if (!m.add(key(f.guestPhysAddr))) return;
    this.order.push(f);
    if (this.buckets) this.toBucket(this.buckets, f);
  }

  private remove(f: LostFrame): void {
    this.mapOf(f.region, f.size, false)?.delete(key(f.guestPhysAddr));
    this.removed.add(f);
  }

  private toBucket(b: Map<string, Set<LostFrame>>, f: LostFrame): void {
    const bk = `${f.region}\u0000${(f.guestPhysAddr >> BUCKET).toString(16)}`;
    let set = b.get(bk);
    if (!set) b.set(bk, (set = new Set()));
    set.add(f);
  }

  /** Removes the frames of `region` lying inside [gpa, gpa + size) (a reset spans whole huge pages). */
  reset(region: string, gpa: bigint, size: number): void {
    if (!this.buckets) {
      this.buckets = new Map();
      for (const f of this.order) if (!this.removed.has(f)) this.toBucket(this.buckets, f);
    }
    const end = gpa + BigInt(size);
    // A frame starts in a bucket the range covers.
    for (let b = gpa >> BUCKET; b <= (end - 1n) >> BUCKET; b++) {
      const bk = `${region}\u0000${b.toString(16)}`;
      const set = this.buckets.get(bk);
      if (!set) continue;
      for (const f of set) {
        if (f.guestPhysAddr >= gpa && f.guestPhysAddr + BigInt(f.size) <= end) {
          this.remove(f);
          set.delete(f);
        }
      }
      if (set.size === 0) this.buckets.delete(bk);
    }
  }

  /** Removes every frame of `region` and returns them (journal order). */
  takeRegion(region: string): LostFrame[] {
    const out: LostFrame[] = [];
    for (const f of this.order) {
      if (f.region !== region || this.removed.has(f)) continue;
      this.remove(f);
      this.buckets?.get(`${f.region}\u0000${(f.guestPhysAddr >> BUCKET).toString(16)}`)?.delete(f);
      out.push(f);
    }
    return out;
  }

  /** The frames held, in the order they were (last) added. */
  values(): LostFrame[] {
    return this.removed.size === 0 ? this.order : this.order.filter((f) => !this.removed.has(f));
  }
}
