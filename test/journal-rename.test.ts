// The journal knows memory by its file (boot, device, inode), not only by the name the VMM gave it:
// the same file mapped under another name in the next life is refused with a clear error while the
// journal holds losses for it under the old name, instead of reading as healthy.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { hugeFile, MiB, openEngine, PKG, runChild, SUB } from './helpers';

const GPA = 0x1_0000_0000n;

describe('a renamed region', () => {
  it('is refused while the journal holds losses of its file under the old name; the old name gets them', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ras-rename-'));
    const journal = path.join(dir, 'j');
    const file = hugeFile('rename');
    const first = runChild(
      `
      const { RasEngine } = ${PKG};
      const e = RasEngine.open({ reserveBytes: 0, journalPath: process.env.J });
      const r = e.mapRegion({ name: 'ram', path: process.env.F, size: 4 << 20, guestPhysAddr: ${GPA}n });
      e.injectPoison(r, (2 << 20) + 3 * 4096, { mode: 'simulate' });
      e.whenIdle().then(() => e.prepareHandover()).then(() => process.exit(0));
    `,
      { J: journal, F: file },
    );
    expect(first.stderr).toBe('');
    const engine = openEngine({ journalPath: journal });
    let err: unknown;
    try {
      engine.mapRegion({ name: 'guest-ram', path: file, size: 4 * MiB, guestPhysAddr: GPA });
    } catch (e) {
      err = e;
    }
    expect(err).toMatchObject({ code: 'ERR_JOURNAL_REGION_RENAMED', region: 'guest-ram', journalRegion: 'ram' });
    expect(fs.readFileSync('/proc/self/maps', 'utf8')).not.toContain(file);
    // Under its journaled name the loss is there.
    const region = engine.mapRegion({ name: 'ram', path: file, size: 4 * MiB, guestPhysAddr: GPA });
    await engine.whenIdle({ timeoutMs: 10_000 });
    expect(engine.lostPages()).toEqual([expect.objectContaining({ offset: 2 * MiB + 3 * SUB, size: SUB, cause: 'replayed' })]);
    expect(() => region.read(2 * MiB + 3 * SUB, 1)).toThrow(expect.objectContaining({ code: 'ERR_POISONED' }));
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('another name for a file the journal holds nothing outstanding for is fine', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ras-rename-'));
    const journal = path.join(dir, 'j');
    const file = hugeFile('rename-clean');
    const a = openEngine({ journalPath: journal });
    a.mapRegion({ name: 'ram', path: file, size: 2 * MiB, guestPhysAddr: GPA });
    a.close();
    const b = openEngine({ journalPath: journal });
    expect(b.mapRegion({ name: 'memory', path: file, size: 2 * MiB, guestPhysAddr: GPA }).name).toBe('memory');
    fs.rmSync(dir, { recursive: true, force: true });
  });
});
