// The open engines of this process. One native worker and one reserve serve them all: dispatch routes
// the worker's events to the engine owning the region, reserve sizes the reserve for all of them.
import type { NativeEvent } from '../native';
import type { Region } from '../region';

export interface AttachedEngine {
  /** Handles one native event; false if the region is not this engine's. */
  handleNativeEvent(e: NativeEvent): boolean;
  /** Reserve depth this engine would like per huge page size (empty once closed). */
  reserveWish(): Map<number, number>;
  /** The regions it maps. */
  mappedRegions(): Iterable<Region>;
  /** A batch of n events has been handled (they count as delivered when the callback returns). */
  batchDelivered(n: number): void;
}

const engines = new Set<AttachedEngine>();

export function attach(engine: AttachedEngine): void {
  engines.add(engine);
}

export function detach(engine: AttachedEngine): void {
  engines.delete(engine);
}

export function attached(): ReadonlySet<AttachedEngine> {
  return engines;
}
