// Warm restart (issue 10 #4): after a split the guest's data lives in private memory and the file's
// huge page is frozen at the poison. Without a handover a restarted engine must not present the
// file's data as current (the page is 'stale': inaccessible, reported); with prepareHandover() every
// healthy byte written after the split is in the file and reads back after the restart.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { PoisonError, type LostEvent } from '../src/index';
import { native } from '../src/native';
import { hugeFile, MiB, openEngine, PKG, runChild, SUB, TESTING } from './helpers';

const GPA = 0x2_0000_0000n;
const LOST = 2 * MiB + 17 * SUB; // the poisoned 4 KiB, in huge page 1

/** The bytes the guest writes after the split: not the pattern the file holds from before. */
function newData(offset: number, length: number): Buffer {
  const b = Buffer.alloc(length);
  for (let i = 0; i < length; i++) b[i] = (((offset + i) * 2654435761) >>> 13) & 0xff ^ 0x5a;
  return b;
}

function journalDir(): string {
  return path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'ras-handover-')), 'ledger.journal');
}

// First life, in a child: fill, poison huge page 1, recover, write new data over every healthy byte
// of both huge pages, then (`mode`) hand over or not, and close. Prints what it saw as JSON.
function firstLife(journal: string, file: string, mode: 'none' | 'handover' | 'abort' | 'poison-after'): Record<string, unknown> {
  const r = runChild(`
    const { RasEngine } = ${PKG};
    const { fillPattern } = ${TESTING};
    const newData = ${newData.toString()};
    (async () => {
      const e = RasEngine.open({ reserveBytes: 0, journalPath: process.env.J });
      const r = e.mapRegion({ name: 'ram', path: process.env.F, size: 4 << 20, guestPhysAddr: ${GPA}n });
      fillPattern(r, 31);
      e.injectPoison(r, ${LOST}, { mode: 'simulate' });
      await e.whenIdle({ timeoutMs: 10000 });
      r.write(0, newData(0, ${LOST}));
      r.write(${LOST + SUB}, newData(${LOST + SUB}, ${4 * MiB - LOST - SUB}));
      const out = { mode: process.env.M };
      if (process.env.M !== 'none') out.result = await e.prepareHandover();
      if (process.env.M === 'abort') {
        try { r.write(${2 * MiB}, Buffer.from('x')); } catch (err) { out.writeBefore = err.code; }
        e.abortHandover();
        r.write(${2 * MiB}, Buffer.from('after-abort'));
      }
      if (process.env.M === 'poison-after') {
        e.injectPoison(r, ${2 * MiB + 99 * SUB}, { mode: 'simulate' });
        await e.whenIdle({ timeoutMs: 10000 });
      }
      e.close();
      console.log(JSON.stringify(out, (k, v) => (typeof v === 'bigint' ? '0x' + v.toString(16) : v)));
    })().catch((err) => { console.error(err); process.exit(1); });
  `, { J: journal, F: file, M: mode });
  expect(r.stderr).toBe('');
  expect(r.status).toBe(0);
  return JSON.parse(r.stdout) as Record<string, unknown>;
}

describe('warm restart: split pages are handed over or reported stale', () => {
  it('without a handover the restarted engine never presents the frozen file data as current', async () => {
    const journal = journalDir();
    const file = hugeFile('stale');
    firstLife(journal, file, 'none');

    const engine = openEngine({ journalPath: journal });
    const events: LostEvent[] = [];
    engine.on('lost', (e) => events.push(e));
    const region = engine.mapRegion({ name: 'ram', path: file, size: 4 * MiB, guestPhysAddr: GPA });
    await engine.whenIdle({ timeoutMs: 10_000 });
    // The whole split huge page is stale: inaccessible (a machine check for the guest), reported.
    expect(events).toEqual([expect.objectContaining({ guestPhysAddr: GPA + BigInt(2 * MiB), offset: 2 * MiB, size: 2 * MiB, cause: 'stale' })]);
    expect(engine.lostPages()).toEqual([
      expect.objectContaining({ offset: 2 * MiB, size: 2 * MiB, cause: 'stale', hugePageIndex: 1, reason: expect.stringMatching(/not handed over/) }),
    ]);
    expect(engine.stats().replay).toEqual({
      handedOverHugePages: 0,
      staleHugePages: [{ region: 'ram', hugePageIndex: 1, hugePageGuestPhysAddr: GPA + BigInt(2 * MiB), size: 2 * MiB, lostGuestPhysAddrs: [GPA + BigInt(LOST)] }],
    });
    for (const off of [2 * MiB, 2 * MiB + 5 * SUB, LOST + SUB, 4 * MiB - 1]) expect(() => region.read(off, 1)).toThrow(PoisonError);
    // The page that was never split is file-backed: its data is current.
    expect(region.read(0, 2 * MiB).equals(newData(0, 2 * MiB))).toBe(true);
    // A VMM that cold-boots the guest takes the memory back with a reset: fresh, zeroed.
    const reset = await engine.resetRegion(region);
    expect(reset.restoredHugePages).toBe(1);
    expect(region.read(2 * MiB, 2 * MiB).equals(Buffer.alloc(2 * MiB))).toBe(true);
    expect(engine.lostPages()).toEqual([]);
  });

  it('with a handover every healthy byte written after the split reads back; the lost frame stays lost', async () => {
    const journal = journalDir();
    const file = hugeFile('handover');
    const out = firstLife(journal, file, 'handover') as { result: { handedOver: unknown[]; notHandedOver: unknown[]; bytesCopied: number; id: string } };
    expect(out.result.notHandedOver).toEqual([]);
    expect(out.result.handedOver).toEqual([
      { region: 'ram', hugePageIndex: 1, hugePageGuestPhysAddr: '0x' + (GPA + BigInt(2 * MiB)).toString(16), bytesCopied: 2 * MiB - SUB, lostGuestPhysAddrs: ['0x' + (GPA + BigInt(LOST)).toString(16)] },
    ]);
    expect(out.result.bytesCopied).toBe(2 * MiB - SUB);
    // The file itself holds the new data now, zero where the frame was lost.
    const fd = fs.openSync(file, 'r');
    const inFile = Buffer.alloc(2 * MiB);
    fs.readSync(fd, inFile, 0, 2 * MiB, 2 * MiB);
    fs.closeSync(fd);
    expect(inFile.subarray(17 * SUB, 18 * SUB).equals(Buffer.alloc(SUB))).toBe(true);
    expect(inFile.subarray(18 * SUB).equals(newData(LOST + SUB, 4 * MiB - LOST - SUB))).toBe(true);

    const engine = openEngine({ journalPath: journal });
    expect(engine.journalReplay?.handedOver).toEqual([expect.objectContaining({ region: 'ram', offset: 2 * MiB, size: 2 * MiB, lost: 1, id: out.result.id })]);
    const events: LostEvent[] = [];
    engine.on('lost', (e) => events.push(e));
    const region = engine.mapRegion({ name: 'ram', path: file, size: 4 * MiB, guestPhysAddr: GPA });
    await engine.whenIdle({ timeoutMs: 10_000 });
    expect(events).toEqual([expect.objectContaining({ guestPhysAddr: GPA + BigInt(LOST), size: SUB, cause: 'replayed' })]);
    expect(engine.lostPages()).toEqual([expect.objectContaining({ offset: LOST, size: SUB, cause: 'replayed' })]);
    expect(engine.stats().replay).toEqual({ handedOverHugePages: 1, staleHugePages: [] });
    expect(() => region.read(LOST, 1)).toThrow(PoisonError);
    expect(region.read(0, LOST).equals(newData(0, LOST))).toBe(true);
    expect(region.read(LOST + SUB, 4 * MiB - LOST - SUB).equals(newData(LOST + SUB, 4 * MiB - LOST - SUB))).toBe(true);
    engine.close();

    // The handover is used once: this life re-split the page (a `resplit` record) and ran on private
    // memory; it ended without a handover of its own, so the next restart finds the page stale.
    const third = openEngine({ journalPath: journal });
    expect(third.journalReplay?.handedOver).toEqual([]);
    const r3 = third.mapRegion({ name: 'ram', path: file, size: 4 * MiB, guestPhysAddr: GPA });
    expect(third.lostPages()).toEqual([expect.objectContaining({ offset: 2 * MiB, size: 2 * MiB, cause: 'stale' })]);
    expect(() => r3.read(LOST + SUB, 1)).toThrow(PoisonError);
  });

  it('a handover that was aborted, or a loss in the page after it, is not trusted', async () => {
    for (const mode of ['abort', 'poison-after'] as const) {
      const journal = journalDir();
      const file = hugeFile(mode);
      const out = firstLife(journal, file, mode) as { writeBefore?: string; result: { handedOver: unknown[] } };
      expect(out.result.handedOver).toHaveLength(1);
      if (mode === 'abort') expect(out.writeBefore).toBe('ERR_HANDED_OVER');
      const engine = openEngine({ journalPath: journal });
      expect(engine.journalReplay?.handedOver).toEqual([]);
      const region = engine.mapRegion({ name: 'ram', path: file, size: 4 * MiB, guestPhysAddr: GPA });
      expect(engine.lostPages()).toEqual([expect.objectContaining({ offset: 2 * MiB, size: 2 * MiB, cause: 'stale' })]);
      expect(() => region.read(2 * MiB, 1)).toThrow(PoisonError);
      engine.close();
    }
  });
});

describe('prepareHandover: state, bad input and failures', () => {
  it('refuses what would make the file stale again, once handed over; abortHandover undoes it', async () => {
    const engine = openEngine({ journalPath: journalDir() });
    const region = engine.mapRegion({ name: 'ram', path: hugeFile('twice'), size: 4 * MiB, guestPhysAddr: GPA });
    engine.injectPoison(region, LOST, { mode: 'simulate' });
    await engine.whenIdle({ timeoutMs: 10_000 });
    const first = await engine.prepareHandover();
    expect(first.handedOver).toHaveLength(1);
    expect(engine.stats().handoverId).toBe(first.id);
    await expect(engine.prepareHandover()).rejects.toMatchObject({ code: 'ERR_HANDED_OVER' });
    await expect(engine.resetRegion(region)).rejects.toMatchObject({ code: 'ERR_HANDED_OVER' });
    expect(() => engine.mapRegion({ name: 'other', path: hugeFile('other'), size: 2 * MiB, guestPhysAddr: 0n })).toThrow(
      expect.objectContaining({ code: 'ERR_HANDED_OVER' }),
    );
    expect(() => region.write(2 * MiB + 5 * SUB, Buffer.from('new'))).toThrow(expect.objectContaining({ code: 'ERR_HANDED_OVER', hugePageIndex: 1 }));
    region.write(5 * SUB, Buffer.from('unsplit pages are file-backed: never stale'));
    expect(region.read(2 * MiB + 5 * SUB, 3)).toEqual(Buffer.alloc(3)); // nothing was written
    engine.abortHandover();
    expect(() => engine.abortHandover()).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG' }));
    region.write(2 * MiB + 5 * SUB, Buffer.from('new'));
    const second = await engine.prepareHandover();
    expect(second.handedOver).toHaveLength(1);
    expect(second.id).not.toBe(first.id);
  });

  it('needs a journal; on an ineligible region it punches nothing', async () => {
    const noJournal = openEngine();
    await expect(noJournal.prepareHandover()).rejects.toMatchObject({ code: 'ERR_NO_JOURNAL' });
    noJournal.close();

    const engine = openEngine({ journalPath: journalDir() });
    const file = hugeFile('shared');
    const region = engine.mapRegion({ name: 'shm', path: file, size: 2 * MiB, guestPhysAddr: 0n, share: true });
    region.write(0, newData(0, 2 * MiB));
    engine.injectPoison(region, 3 * SUB, { mode: 'simulate' });
    await engine.whenIdle({ timeoutMs: 10_000 });
    expect(engine.lostPages()).toEqual([expect.objectContaining({ cause: 'refused', size: 2 * MiB })]);
    const r = await engine.prepareHandover();
    expect(r).toMatchObject({ handedOver: [], notHandedOver: [], bytesCopied: 0 });
    const inFile = fs.readFileSync(file);
    expect(inFile.equals(newData(0, 2 * MiB))).toBe(true); // the peer's page was not punched
  });

  it('no free huge page: that page is not handed over (ERR_NO_HUGE_PAGE) and nothing changes', async () => {
    const journal = journalDir();
    const engine = openEngine({ journalPath: journal });
    const file = hugeFile('nopool');
    const region = engine.mapRegion({ name: 'ram', path: file, size: 4 * MiB, guestPhysAddr: GPA });
    region.write(0, newData(0, 4 * MiB));
    engine.injectPoison(region, LOST, { mode: 'simulate' });
    await engine.whenIdle({ timeoutMs: 10_000 });
    region.write(LOST + SUB, Buffer.from('after the split'));
    const before = fs.readFileSync(file);
    // The pool has no free huge page (the native check answers as mmap(MAP_HUGETLB) would: taking
    // every page for real here would starve the test files that run meanwhile).
    native.testHandoverPoolEmpty(true);
    let r: Awaited<ReturnType<typeof engine.prepareHandover>>;
    try {
      r = await engine.prepareHandover();
    } finally {
      native.testHandoverPoolEmpty(false);
    }
    expect(r.handedOver).toEqual([]);
    expect(r.bytesCopied).toBe(0);
    expect(r.notHandedOver).toEqual([
      expect.objectContaining({ region: 'ram', hugePageIndex: 1, code: 'ERR_NO_HUGE_PAGE', punched: false, errno: -12, message: expect.stringMatching(/nothing was changed/) }),
    ]);
    expect(fs.readFileSync(file).equals(before)).toBe(true);
    expect(region.read(LOST + SUB, 15).toString()).toBe('after the split');
    engine.abortHandover();
    engine.close();
    // The successor finds the page stale.
    const next = openEngine({ journalPath: journal });
    next.mapRegion({ name: 'ram', path: file, size: 4 * MiB, guestPhysAddr: GPA });
    expect(next.lostPages()).toEqual([expect.objectContaining({ offset: 2 * MiB, cause: 'stale' })]);
  });
});
