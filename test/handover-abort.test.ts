// abortHandover() while prepareHandover() is still pending: the abort wins. The pending call fails
// with ERR_HANDOVER_ABORTED, nothing is punched or journaled as handed over, and the guest may write.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { readJournal } from '../src/index';
import { hugeFile, MiB, openEngine, SUB } from './helpers';

const GPA = 0x1_0000_0000n;

describe('abortHandover during a pending prepareHandover', () => {
  it('the pending call fails, the journal holds no valid handover, and the guest writes again', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ras-abort-'));
    const journal = path.join(dir, 'j');
    const engine = openEngine({ journalPath: journal });
    const region = engine.mapRegion({ name: 'ram', path: hugeFile('abort'), size: 4 * MiB, guestPhysAddr: GPA });
    region.write(2 * MiB + 9 * SUB, Buffer.from('before'));
    engine.injectPoison(region, 2 * MiB + 5 * SUB, { mode: 'simulate' });
    await engine.whenIdle({ timeoutMs: 10_000 });
    const pending = engine.prepareHandover();
    engine.abortHandover(); // before the pending call got past its wait
    await expect(pending).rejects.toMatchObject({ code: 'ERR_HANDOVER_ABORTED' });
    expect(engine.stats().handoverId).toBeUndefined();
    region.write(2 * MiB + 9 * SUB, Buffer.from('after!'));
    expect(region.read(2 * MiB + 9 * SUB, 6).toString()).toBe('after!');
    expect(readJournal(journal).handedOver).toEqual([]);
    // A new handover after it works as ever.
    const next = await engine.prepareHandover();
    expect(next.handedOver).toHaveLength(1);
    expect(readJournal(journal).handedOver).toHaveLength(1);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('close() while it is pending: it fails with ERR_ENGINE_CLOSED, and nothing is handed over', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ras-abort-'));
    const journal = path.join(dir, 'j');
    const engine = openEngine({ journalPath: journal });
    const region = engine.mapRegion({ name: 'ram', path: hugeFile('abort-close'), size: 4 * MiB, guestPhysAddr: GPA });
    engine.injectPoison(region, 2 * MiB + 5 * SUB, { mode: 'simulate' });
    await engine.whenIdle({ timeoutMs: 10_000 });
    const pending = engine.prepareHandover();
    engine.close();
    await expect(pending).rejects.toMatchObject({ code: 'ERR_ENGINE_CLOSED' });
    expect(readJournal(journal).handedOver).toEqual([]);
    fs.rmSync(dir, { recursive: true, force: true });
  });
});
