// Reserve: already-faulted replacement memory, so a split needs no allocation while a vCPU waits. It
// serves the whole process: one pool per huge page size, each as deep as the deepest wish of the
// open engines for that size. Blocks are never carved: a 2 MiB recovery never takes from the 1 GiB
// pool, so each page size stays served.
import { native } from '../native';
import type { Region } from '../region';
import { attached } from './engines';

/** Depth per huge page size (bytes -> blocks). */
export type ReserveWish = Map<number, number>;

/**
 * 'auto' depths: what a VMM holds by default, 16 MiB. A burst of errors on 2 MiB pages finds 8 blocks
 * ready. No 1 GiB block: on the lazy path only the back half needs one, and nobody waits for it (it
 * takes fresh memory and faults it as it reads the page back); on the eager path a held block saves
 * the faulting of 1 GiB while the page is unavailable (RESERVE_1G_STALL), which an operator buys with
 * `reserve: { '1G': 1 }` for 1 GiB of RAM per VMM.
 */
export const AUTO_DEPTH: Record<string, number> = { '2M': 8, '1G': 0 };

/**
 * What a held 1 GiB block saves an eager recovery of a 1 GiB page: fresh memory faulted during the
 * read-back against a pre-faulted block (/work/shared/KERNEL-FACTS.md, C probe on the development
 * machine: ~585 ms against ~126 ms).
 */
export const RESERVE_1G_STALL =
  'without a held 1 GiB block an eager recovery of a 1 GiB page (no lazy path, or an action-optional report) faults ' +
  'its replacement while the page is unavailable: ~0.46 s more stall (585 ms against 126 ms on the development ' +
  "machine); reserve: { '1G': 1 } holds one, for 1 GiB of RAM per VMM";
const MiB = 1 << 20;

export function sizeKey(size: number): string {
  return size >= 1 << 30 ? `${size / (1 << 30)}G` : `${size / MiB}M`;
}

export function applyReserve(): void {
  const depth = new Map<number, number>();
  for (const e of attached()) for (const [size, d] of e.reserveWish()) depth.set(size, Math.max(depth.get(size) ?? 0, d));
  const sizes = [...depth.keys()];
  native.setReserve(sizes, sizes.map((s) => depth.get(s) as number));
}

/**
 * An engine's wish, per page size in use: `reserve[size]` blocks where given; else from
 * `reserveBytes`: 'auto' -> AUTO_DEPTH, a number -> as many whole blocks of each size as fit in it
 * (0: none).
 */
export function reserveWish(bytes: number | 'auto', depths: Record<string, number> | undefined, regions: Iterable<Region>): ReserveWish {
  const out: ReserveWish = new Map();
  for (const size of new Set([...regions].map((r) => r.hugePageSize))) {
    const key = sizeKey(size);
    const d = depths?.[key] ?? (bytes === 'auto' ? (AUTO_DEPTH[key] ?? (size <= 2 * MiB ? 1 : 0)) : Math.floor(bytes / size));
    if (d > 0) out.set(size, d);
  }
  return out;
}
