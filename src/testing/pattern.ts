// Test tool: the deterministic pattern (8-byte words that depend on offset and seed), filled and
// checked natively at memory speed.
import { checkUint } from '../errors';
import { isFault, native } from '../native';
import { Region } from '../region';

export interface PatternCheck {
  checkedBytes: number;
  wrongBytes: number;
  /** -1 when every readable byte matched. */
  firstWrongOffset: number;
  /** Region offsets of the 4 KiB subpages that could not be read (poisoned or lost). */
  unreadableOffsets: number[];
}

export function fillPattern(region: Region, seed: number): void {
  Region.check(region);
  checkUint(seed, 'seed');
  const r = native.fillPattern(region.id, seed);
  if (isFault(r)) throw region.faultError(r);
}

export function verifyPattern(region: Region, seed: number): PatternCheck {
  Region.check(region);
  checkUint(seed, 'seed');
  const r = native.verifyPattern(region.id, seed);
  return {
    checkedBytes: r.checkedBytes,
    wrongBytes: r.wrongBytes,
    firstWrongOffset: r.firstWrongOffset,
    unreadableOffsets: r.unreadableOffsets,
  };
}
