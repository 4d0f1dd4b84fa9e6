// Reserve: already-faulted replacement memory, so a split needs no allocation while a vCPU waits. It
// serves the whole process: its size is the largest wish of the open engines.
import { native } from '../native';
import type { Region } from '../region';
import { attached } from './engines';

export function applyReserve(): void {
  let target = 0;
  for (const e of attached()) target = Math.max(target, e.reserveWish());
  native.setReserve(target);
}

/** An engine's wish: the bytes asked for, or 'auto': one huge page of each size in use. */
export function reserveWish(option: number | 'auto', regions: Iterable<Region>): number {
  if (option !== 'auto') return option;
  // One huge page of each size in use: the fast and the slow lane may both need one at once.
  return [...new Set([...regions].map((r) => r.hugePageSize))].reduce((a, b) => a + b, 0);
}
