// Issue 19: a memory error captured after close()'s drain settled and before the unmap. The drain
// cannot see it, nothing in JS runs before the unmap, and a lane that takes the report finds the
// region gone: the loss must still reach the journal before close() / unmapRegion() returns. A test
// switch (native/testing/unmap_window.h) poisons the page at exactly that moment.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { readJournal } from '../src/index';
import { native } from '../src/native';
import { hugeFile, MiB, openEngine, SUB } from './helpers';

const t = native as unknown as { testPoisonAtUnmap(regionId: number, offset: number): void };
const GPA = 0x2_0000_0000n;

function covers(frames: { offset: number; size: number }[], off: number): boolean {
  return frames.some((f) => f.offset <= off && off < f.offset + f.size);
}

describe('a loss captured between the close drain and the unmap', () => {
  for (const how of ['close', 'unmapRegion'] as const) {
    for (const lazyRecovery of [true, false]) {
      it(`${how}(), ${lazyRecovery ? 'lazy' : 'eager'}: the journal has the frame, and the next life knows it`, async () => {
        const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ras-window-'));
        const journal = path.join(dir, 'j');
        const file = hugeFile('window');
        const off = 2 * MiB + 6 * SUB;
        const engine = openEngine({ journalPath: journal, lazyRecovery });
        const region = engine.mapRegion({ name: 'ram', path: file, size: 4 * MiB, guestPhysAddr: GPA });
        region.write(0, Buffer.alloc(4 * MiB, 0x11));
        t.testPoisonAtUnmap(region.id, off);
        if (how === 'close') engine.close();
        else engine.unmapRegion(region);
        expect(covers(readJournal(journal).lost, off)).toBe(true);
        if (how === 'unmapRegion') {
          // Mapped again in the same life: this life's losses apply, the late one too.
          const same = engine.mapRegion({ name: 'ram', path: file, size: 4 * MiB, guestPhysAddr: GPA });
          await engine.whenIdle({ timeoutMs: 10_000 });
          expect(covers(engine.lostPages(), off)).toBe(true);
          expect(() => same.read(off, 1)).toThrow(expect.objectContaining({ code: 'ERR_POISONED' }));
          engine.close();
        }
        const next = openEngine({ journalPath: journal });
        const again = next.mapRegion({ name: 'ram', path: file, size: 4 * MiB, guestPhysAddr: GPA });
        await next.whenIdle({ timeoutMs: 10_000 });
        expect(covers(next.lostPages(), off)).toBe(true);
        expect(() => again.read(off, 1)).toThrow(expect.objectContaining({ code: 'ERR_POISONED' }));
        // The rest of the region is the guest's.
        expect(again.read(0, SUB).equals(Buffer.alloc(SUB, 0x11))).toBe(true);
        next.close();
        fs.rmSync(dir, { recursive: true, force: true });
      });
    }
  }
});
