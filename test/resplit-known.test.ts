// A re-split without readers (a restart's replay, an import, recoverNow) does not read the subpages
// it is told are lost: on this boot their copy in the file may be poisoned, and each would cost an
// EIO and the read's slow path; their bytes are dropped anyway. A subpage poisoned in the file and
// not known is still found by the read.
import { describe, expect, it } from 'vitest';
import { native } from '../src/native';
import { fillPattern, poisonBackingFile, verifyPattern } from '../src/testing';
import { hugeFile, MiB, openEngine, SUB } from './helpers';

describe('re-split with known lost subpages', () => {
  it('reads only the runs between them: one pread per run, no EIO from the known ones', () => {
    const engine = openEngine();
    const region = engine.mapRegion({ name: 'rk', path: hugeFile('rk'), size: 4 * MiB });
    fillPattern(region, 41);
    const base = 2 * MiB;
    // Poisoned in the file: 5 and 9 (known), 300 (not known: the read must find it).
    for (const s of [5, 9, 300]) poisonBackingFile(region, base + s * SUB);
    const r = native.recoverNow(region.id, 1, [5, 9]);
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    expect(r.lostSubpages).toEqual([5, 9, 300]);
    // Runs [0,5) [6,9) [10,512): 3 preads, plus the EIO at 300 and the read after it (5). Reading
    // the known ones too took 7 (measured on the code before: each poisoned subpage costs a read).
    expect(r.reads).toBe(5);
    const check = verifyPattern(region, 41);
    expect(check.wrongBytes).toBe(0);
    expect(check.unreadableOffsets).toEqual([5, 9, 300].map((s) => base + s * SUB));
  });
});
