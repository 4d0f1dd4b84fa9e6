// recoverMany (native/binding/replay.cc): a restart's re-split of many handed-over huge pages in one
// native call, several at once. What each page ends as: its known lost subpages inaccessible, every
// other byte read back from the file, on record for the C API; a page named twice is left alone.
import * as fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import { native, PageState } from '../src/native';
import { fillPattern, verifyPattern } from '../src/testing';
import { hugeFile, MiB, openEngine, SUB } from './helpers';

describe('recoverMany', () => {
  it('splits every page named, in parallel, with their known losses; a page named twice is busy', () => {
    const engine = openEngine({ readThreads: 2 });
    const file = hugeFile('many');
    try {
      const region = engine.mapRegion({ name: 'ram', path: file, size: 8 * MiB });
      fillPattern(region, 31);
      const out = native.recoverMany(region.id, [0, 2, 3, 0], [[3], [5, 6], [], [7]]);
      expect(out.map((o) => [o.page, o.ok, o.busy ?? false, o.lostSubpages ?? null])).toEqual([
        [0, true, false, [3]],
        [2, true, false, [5, 6]],
        [3, true, false, []],
        [0, false, true, null],
      ]);
      expect(out[0].bytes).toBe(2 * MiB - SUB);
      expect([...native.pageStates(region.id)]).toEqual([PageState.Split, PageState.Normal, PageState.Split, PageState.Split]);
      const check = verifyPattern(region, 31);
      expect(check.wrongBytes).toBe(0);
      expect(check.unreadableOffsets).toEqual([3 * SUB, 2 * 2 * MiB + 5 * SUB, 2 * 2 * MiB + 6 * SUB]);
    } finally {
      engine.close();
      fs.rmSync(file, { force: true });
    }
  });

  it('bad arguments are coded errors and touch nothing', () => {
    const engine = openEngine();
    const file = hugeFile('many-bad');
    try {
      const region = engine.mapRegion({ name: 'ram', path: file, size: 4 * MiB });
      expect(() => native.recoverMany(region.id, [0], [])).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG' }));
      expect(() => native.recoverMany(region.id, [0, 2], [[], []])).toThrow(expect.objectContaining({ code: 'ERR_OUT_OF_RANGE' }));
      expect([...native.pageStates(region.id)]).toEqual([PageState.Normal, PageState.Normal]);
      expect(native.recoverMany(region.id, [], [])).toEqual([]);
    } finally {
      engine.close();
      fs.rmSync(file, { force: true });
    }
  });
});
