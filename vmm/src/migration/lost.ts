// The engine's lost-frame manifest in the stream: engine.exportLost() at the source (first and
// final), engine.importLost() at the destination before its guest runs (docs/API.md).
import type { ImportResult, LostManifest, RasEngine } from '../../../src/index';

export type { ImportResult, LostManifest };

export function exportLost(engine: RasEngine): LostManifest {
  return engine.exportLost();
}

/** 4 KiB frames a manifest names (a whole lost huge page counts all of its frames). */
export function lostFrames(m: LostManifest): number {
  return m.regions.reduce((a, r) => a + r.lost.reduce((b, f) => b + f.size / 4096, 0), 0);
}

export function importLost(engine: RasEngine, m: unknown): ImportResult {
  return engine.importLost(m);
}
