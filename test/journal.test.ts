import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { crc32 } from 'zlib';
import { Journal, readJournal } from '../src/ledger/file';
import { formatJournal } from '../src/ledger/print';
import type { JournalReplay, LostFrame, RegionLayout } from '../src/ledger/records';

const KiB4 = 4096;
const MiB2 = 2 * 1024 * 1024;
const GiB1 = 1024 * 1024 * 1024;

let dir: string;
let file: string;

beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hugetlb-ras-journal-'));
  file = path.join(dir, 'ras.journal');
});
afterEach(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

const ram0: RegionLayout = {
  name: 'ram0',
  path: '/dev/hugepages/vm0-ram0',
  size: GiB1,
  offset: 0,
  guestPhysAddr: 0x1_0000_0000n,
  hugePageSize: MiB2,
};
const ram1: RegionLayout = {
  name: 'ram1',
  path: '/dev/hugepages/vm0-ram1',
  size: 64 * MiB2,
  offset: MiB2,
  guestPhysAddr: 0n,
  hugePageSize: MiB2,
};

function frame(layout: RegionLayout, offset: number, extra: Partial<LostFrame> = {}): LostFrame {
  return {
    region: layout.name,
    guestPhysAddr: layout.guestPhysAddr + BigInt(offset),
    size: KiB4,
    offset,
    cause: 'recovered',
    wallTime: '2024-05-01T12:00:00.000Z',
    ...extra,
  };
}

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (e) {
    return (e as { code?: string }).code;
  }
  return undefined;
}

function errorOf(fn: () => unknown): Error & { code?: string; [k: string]: unknown } {
  try {
    fn();
  } catch (e) {
    return e as Error & { code?: string; [k: string]: unknown };
  }
  throw new Error('expected an error');
}

/** Byte offsets at which each line of the file starts. */
function lineStarts(p: string): number[] {
  const buf = fs.readFileSync(p);
  const starts = [0];
  for (let i = 0; i < buf.length; i++) if (buf[i] === 0x0a && i + 1 < buf.length) starts.push(i + 1);
  return starts;
}

function withJournal<T>(fn: (j: Journal, replay: JournalReplay) => T): T {
  const { journal, replay } = Journal.open(file);
  try {
    return fn(journal, replay);
  } finally {
    journal.close();
  }
}

describe('Journal: creation and round trip', () => {
  it('creates an empty journal with mode 0600 even under umask 0', () => {
    const old = process.umask(0);
    try {
      const { journal, replay } = Journal.open(file);
      journal.close();
      expect(fs.statSync(file).mode & 0o777).toBe(0o600);
      expect(fs.statSync(file).size).toBe(0);
      expect(replay.records).toBe(0);
      expect(replay.lost).toEqual([]);
      expect(replay.warnings).toEqual([]);
      expect(replay.regions.size).toBe(0);
    } finally {
      process.umask(old);
    }
    // a umask that removes owner bits does not leave an unwritable journal either
    const other = path.join(dir, 'umask.journal');
    process.umask(0o377);
    try {
      Journal.open(other).journal.close();
    } finally {
      process.umask(old);
    }
    expect(fs.statSync(other).mode & 0o777).toBe(0o600);
    // an empty file reopens as an empty journal
    const again = Journal.open(file);
    again.journal.close();
    expect(again.replay.records).toBe(0);
    expect(again.replay.warnings).toEqual([]);
  });

  it('replays regions and lost frames after reopen, exactly as appended', () => {
    const frames = [
      frame(ram0, 0x12345000),
      frame(ram0, 0x200000, { size: MiB2, cause: 'refused', reason: 'vfio' }),
      frame(ram1, 0x3000, { cause: 'split-poison', reason: 'guest touched lost memory "x"\nline two' }),
    ];
    withJournal((j) => {
      expect(j.path).toBe(file);
      j.checkRegion(ram0);
      j.checkRegion(ram1);
      j.appendLost(frames.slice(0, 2));
      j.appendLost(frames.slice(2));
      j.appendLost([]); // no-op
    });
    expect(fs.statSync(file).mode & 0o777).toBe(0o600);
    expect(fs.readFileSync(file, 'utf8').split('\n').filter(Boolean)).toHaveLength(5);

    const { journal, replay } = Journal.open(file);
    journal.close();
    expect(replay.warnings).toEqual([]);
    expect(replay.records).toBe(5);
    expect(replay.regions).toEqual(new Map([['ram0', ram0], ['ram1', ram1]]));
    expect(replay.lost).toEqual(frames);
    expect(replay.lost[0].guestPhysAddr).toBe(0x1_1234_5000n);
    expect(readJournal(file)).toEqual(replay);
  });

  it('stores one checksummed JSON line per record, bigints as hex', () => {
    withJournal((j) => {
      j.checkRegion(ram0);
      j.appendLost([frame(ram0, 0x5000)]);
    });
    const lines = fs.readFileSync(file, 'utf8').split('\n');
    expect(lines.pop()).toBe('');
    for (const line of lines) expect(line).toMatch(/^[0-9a-f]{8} \{.*\}$/);
    const lost = JSON.parse(lines[1].slice(9));
    expect(lost).toMatchObject({ type: 'lost', region: 'ram0', guestPhysAddr: '0x100005000', offset: 0x5000, size: 4096 });
  });

  it('keeps duplicate frames once (the earliest record wins)', () => {
    withJournal((j) => {
      j.checkRegion(ram0);
      j.appendLost([frame(ram0, 0x1000, { cause: 'recovered' })]);
      j.appendLost([frame(ram0, 0x1000, { cause: 'replayed', wallTime: '2024-06-01T00:00:00.000Z' })]);
    });
    const r = readJournal(file);
    expect(r.records).toBe(3);
    expect(r.lost).toEqual([frame(ram0, 0x1000)]);
  });

  it('close is idempotent and a closed journal refuses appends', () => {
    const { journal } = Journal.open(file);
    journal.checkRegion(ram0);
    journal.close();
    journal.close();
    const before = fs.readFileSync(file);
    expect(codeOf(() => journal.appendLost([frame(ram0, 0)]))).toBe('ERR_JOURNAL_CLOSED');
    expect(codeOf(() => journal.appendReset({ region: 'ram0', guestPhysAddr: 0n, size: 4096, wallTime: '' }))).toBe(
      'ERR_JOURNAL_CLOSED',
    );
    expect(codeOf(() => journal.checkRegion(ram1))).toBe('ERR_JOURNAL_CLOSED');
    expect(fs.readFileSync(file).equals(before)).toBe(true);
  });
});

describe('Journal: permissions and foreign files', () => {
  it('refuses an existing journal readable by group/others, without touching it', () => {
    withJournal((j) => j.checkRegion(ram0));
    fs.chmodSync(file, 0o644);
    const before = fs.readFileSync(file);
    const e = errorOf(() => Journal.open(file));
    expect(e.code).toBe('ERR_JOURNAL_PERMISSIONS');
    expect(e.message).toContain('0644');
    expect(e.message).toContain('chmod 600');
    expect(fs.statSync(file).mode & 0o777).toBe(0o644);
    expect(fs.readFileSync(file).equals(before)).toBe(true);
    // the read-only CLI path still reads it
    expect(readJournal(file).regions.get('ram0')).toEqual(ram0);
    // after the operator fixes the mode it opens
    fs.chmodSync(file, 0o600);
    withJournal((_j, replay) => expect(replay.regions.get('ram0')).toEqual(ram0));
  });

  it('accepts a stricter mode (0400 is still private)', () => {
    withJournal((j) => j.checkRegion(ram0));
    fs.chmodSync(file, 0o400);
    // Root may still open it for writing; anybody else cannot write it (ERR_JOURNAL_OPEN, EACCES).
    // Either way it is not refused as too open (ERR_JOURNAL_PERMISSIONS).
    let err: { code?: string; fsCode?: string } | undefined;
    try {
      Journal.open(file).journal.close();
    } catch (e) {
      err = e as { code?: string; fsCode?: string };
    }
    if (process.getuid?.() === 0) expect(err).toBeUndefined();
    else expect(err).toMatchObject({ code: 'ERR_JOURNAL_OPEN', fsCode: 'EACCES' });
  });

  it('refuses a file that is not a journal, and a directory, without touching them', () => {
    fs.writeFileSync(file, 'root:x:0:0:root:/root:/bin/bash\nno newline at end', { mode: 0o600 });
    const before = fs.readFileSync(file);
    expect(codeOf(() => Journal.open(file))).toBe('ERR_JOURNAL_FORMAT');
    expect(codeOf(() => readJournal(file))).toBe('ERR_JOURNAL_FORMAT');
    expect(fs.readFileSync(file).equals(before)).toBe(true);
    const sub = path.join(dir, 'sub');
    fs.mkdirSync(sub, { mode: 0o700 });
    expect(codeOf(() => readJournal(sub))).toMatch(/^(ERR_JOURNAL_FORMAT|ERR_JOURNAL_OPEN)$/);
    expect(codeOf(() => Journal.open(sub))).toMatch(/^(ERR_JOURNAL_FORMAT|ERR_JOURNAL_OPEN)$/);
  });

  it('readJournal does not create a missing file', () => {
    expect(errorOf(() => readJournal(file))).toMatchObject({ code: 'ERR_JOURNAL_OPEN', path: file, fsCode: 'ENOENT', syscall: 'open' });
    expect(fs.existsSync(file)).toBe(false);
  });

  it('refuses records written by a newer format version', () => {
    const json = JSON.stringify({ v: 5, type: 'lost' });
    fs.writeFileSync(file, `${crc32(json).toString(16).padStart(8, '0')} ${json}\n`, { mode: 0o600 });
    expect(codeOf(() => Journal.open(file))).toBe('ERR_JOURNAL_VERSION');
  });
});

describe('Journal: torn and corrupted records', () => {
  function writeThree(): void {
    withJournal((j) => {
      j.checkRegion(ram0);
      j.appendLost([frame(ram0, 0x1000)]);
      j.appendLost([frame(ram0, 0x2000)]);
    });
  }

  it('a torn tail is reported with its offset, skipped, truncated, and later appends replay cleanly', () => {
    writeThree();
    const starts = lineStarts(file);
    expect(starts).toHaveLength(3);
    const full = fs.statSync(file).size;
    const cut = starts[2] + Math.floor((full - starts[2]) / 2);
    fs.truncateSync(file, cut);

    // read-only view: reported, not truncated
    const ro = readJournal(file);
    expect(ro.records).toBe(2);
    expect(ro.lost).toEqual([frame(ram0, 0x1000)]);
    expect(ro.warnings).toHaveLength(1);
    expect(ro.warnings[0]).toMatchObject({ code: 'ERR_JOURNAL_TORN_TAIL', byteOffset: starts[2] });
    expect(fs.statSync(file).size).toBe(cut);

    const { journal, replay } = Journal.open(file);
    expect(replay.records).toBe(2);
    expect(replay.regions.get('ram0')).toEqual(ram0);
    expect(replay.lost).toEqual([frame(ram0, 0x1000)]);
    expect(replay.warnings).toEqual([expect.objectContaining({ code: 'ERR_JOURNAL_TORN_TAIL', byteOffset: starts[2] })]);
    expect(replay.warnings[0].message).toContain(String(starts[2]));
    expect(fs.statSync(file).size).toBe(starts[2]);

    journal.appendLost([frame(ram0, 0x3000)]);
    journal.close();
    const again = Journal.open(file);
    again.journal.close();
    expect(again.replay.warnings).toEqual([]);
    expect(again.replay.records).toBe(3);
    expect(again.replay.lost).toEqual([frame(ram0, 0x1000), frame(ram0, 0x3000)]);
  });

  it('every possible cut point yields a prefix of the records and a clean file after reopen + append', () => {
    writeThree();
    const original = fs.readFileSync(file);
    const starts = lineStarts(file);
    const ends = [...starts.slice(1), original.length];
    for (let cut = 0; cut <= original.length; cut++) {
      fs.writeFileSync(file, original.subarray(0, cut), { mode: 0o600 });
      const complete = ends.filter((e) => e <= cut).length;
      const { journal, replay } = Journal.open(file);
      expect(replay.records).toBe(complete);
      const torn = !ends.includes(cut) && cut !== 0;
      expect(replay.warnings.map((w) => [w.code, w.byteOffset])).toEqual(
        torn ? [['ERR_JOURNAL_TORN_TAIL', complete === 0 ? 0 : ends[complete - 1]]] : [],
      );
      if (complete === 0) journal.checkRegion(ram0);
      journal.appendLost([frame(ram0, 0x9000)]);
      journal.close();
      const after = readJournal(file);
      expect(after.warnings).toEqual([]);
      expect(after.records).toBe(Math.max(complete, 1) + 1);
      expect(after.lost.at(-1)).toEqual(frame(ram0, 0x9000));
    }
  });

  it('a zero-filled tail (data blocks lost on power failure) is a torn tail', () => {
    writeThree();
    const size = fs.statSync(file).size;
    fs.appendFileSync(file, Buffer.alloc(100));
    const { journal, replay } = Journal.open(file);
    journal.close();
    expect(replay.records).toBe(3);
    expect(replay.warnings).toEqual([expect.objectContaining({ code: 'ERR_JOURNAL_TORN_TAIL', byteOffset: size })]);
    expect(fs.statSync(file).size).toBe(size);
  });

  it('a corrupted record in the middle is skipped and reported; records after it are kept', () => {
    writeThree();
    const starts = lineStarts(file);
    const buf = fs.readFileSync(file);
    const at = buf.indexOf('0x100001000', starts[1]);
    expect(at).toBeGreaterThan(starts[1]);
    buf[at + 8] ^= 0x01; // '1' -> '0': the JSON still parses, only the checksum catches it
    fs.writeFileSync(file, buf);

    const { journal, replay } = Journal.open(file);
    expect(replay.records).toBe(2);
    expect(replay.regions.get('ram0')).toEqual(ram0);
    expect(replay.lost).toEqual([frame(ram0, 0x2000)]);
    expect(replay.warnings).toHaveLength(1);
    expect(replay.warnings[0]).toMatchObject({ code: 'ERR_JOURNAL_BAD_RECORD', byteOffset: starts[1] });
    expect(replay.warnings[0].message).toMatch(/checksum/);
    expect(fs.readFileSync(file).equals(buf)).toBe(true); // a bad middle record is not removed

    journal.appendLost([frame(ram0, 0x3000)]);
    journal.close();
    const again = readJournal(file);
    expect(again.records).toBe(3);
    expect(again.lost).toEqual([frame(ram0, 0x2000), frame(ram0, 0x3000)]);
    expect(again.warnings.map((w) => [w.code, w.byteOffset])).toEqual([['ERR_JOURNAL_BAD_RECORD', starts[1]]]);
  });

  it('a corrupted checksum field or garbage line in the middle is a bad record too', () => {
    writeThree();
    const starts = lineStarts(file);
    const buf = fs.readFileSync(file);
    buf[starts[1]] = 0x7a; // 'z': not a hex digit
    fs.writeFileSync(file, Buffer.concat([buf.subarray(0, starts[2]), Buffer.from('garbage\n'), buf.subarray(starts[2])]));
    const r = readJournal(file);
    expect(r.records).toBe(2);
    expect(r.lost).toEqual([frame(ram0, 0x2000)]);
    expect(r.warnings.map((w) => [w.code, w.byteOffset])).toEqual([
      ['ERR_JOURNAL_BAD_RECORD', starts[1]],
      ['ERR_JOURNAL_BAD_RECORD', starts[2]],
    ]);
  });
});

describe('Journal: region layouts', () => {
  it('records a new layout durably, ignores an identical one, refuses a different one', () => {
    withJournal((j) => j.checkRegion(ram0));
    const size1 = fs.statSync(file).size;
    withJournal((j, replay) => {
      expect(replay.regions.get('ram0')).toEqual(ram0);
      j.checkRegion({ ...ram0 }); // identical: no-op
      expect(fs.statSync(file).size).toBe(size1);
      j.checkRegion(ram1); // new: recorded
      expect(fs.statSync(file).size).toBeGreaterThan(size1);
    });
    expect([...readJournal(file).regions.keys()]).toEqual(['ram0', 'ram1']);
  });

  const changes: [keyof RegionLayout, unknown, string, string][] = [
    ['path', '/dev/hugepages/other', '"/dev/hugepages/vm0-ram0"', '"/dev/hugepages/other"'],
    ['size', 2 * GiB1, String(GiB1), String(2 * GiB1)],
    ['offset', MiB2, '0', String(MiB2)],
    ['guestPhysAddr', 0x2_0000_0000n, '0x100000000', '0x200000000'],
    ['hugePageSize', GiB1, String(MiB2), String(GiB1)],
  ];
  for (const [field, value, oldText, newText] of changes) {
    it(`refuses a layout whose ${field} differs, naming the field and both values`, () => {
      withJournal((j) => j.checkRegion(ram0));
      const before = fs.readFileSync(file);
      withJournal((j) => {
        const e = errorOf(() => j.checkRegion({ ...ram0, [field]: value }));
        expect(e.code).toBe('ERR_JOURNAL_LAYOUT_MISMATCH');
        expect(e.message).toContain('ram0');
        expect(e.message).toContain(field);
        expect(e.message).toContain(oldText);
        expect(e.message).toContain(newText);
        expect(e.region).toBe('ram0');
        expect(e.differences).toEqual([{ field, journal: ram0[field], requested: value }]);
      });
      expect(fs.readFileSync(file).equals(before)).toBe(true);
    });
  }

  it('a mismatch within the same session is refused too', () => {
    withJournal((j) => {
      j.checkRegion(ram1);
      expect(codeOf(() => j.checkRegion({ ...ram1, size: ram1.size * 2 }))).toBe('ERR_JOURNAL_LAYOUT_MISMATCH');
    });
  });
});

describe('Journal: resets', () => {
  it('a reset clears the covered lost frames of its region only', () => {
    const hpBase = 0x20000000; // a huge page inside ram0
    const twin: RegionLayout = { ...ram1, name: 'twin', guestPhysAddr: ram0.guestPhysAddr }; // same gpa, other region
    withJournal((j) => {
      j.checkRegion(ram0);
      j.checkRegion(twin);
      j.appendLost([
        frame(ram0, hpBase - KiB4), // just before the range
        frame(ram0, hpBase), // first frame of the range
        frame(ram0, hpBase + MiB2 - KiB4), // last frame of the range
        frame(ram0, hpBase + MiB2), // just after
        frame(ram0, hpBase - MiB2, { size: MiB2, cause: 'refused' }), // previous huge page
        frame(twin, 0x1000),
        frame(ram0, 0x1000),
      ]);
    });
    withJournal((j, replay) => {
      expect(replay.lost).toHaveLength(7);
      j.appendReset({ region: 'ram0', guestPhysAddr: ram0.guestPhysAddr + BigInt(hpBase), size: MiB2, wallTime: 'x' });
      j.appendReset({ region: 'ram0', guestPhysAddr: ram0.guestPhysAddr, size: 0x2000, wallTime: 'x' });
      j.appendLost([frame(ram0, hpBase + 0x5000)]); // lost again after the reset: kept
    });
    const r = readJournal(file);
    expect(r.warnings).toEqual([]);
    expect(r.lost.map((f) => [f.region, f.offset, f.size])).toEqual([
      ['ram0', hpBase - KiB4, KiB4],
      ['ram0', hpBase + MiB2, KiB4],
      ['ram0', hpBase - MiB2, MiB2],
      ['twin', 0x1000, KiB4],
      ['ram0', hpBase + 0x5000, KiB4],
    ]);
  });

  it('a reset does not clear a larger frame it only partly covers', () => {
    withJournal((j) => {
      j.checkRegion(ram0);
      j.appendLost([frame(ram0, 0, { size: MiB2, cause: 'refused' })]);
      j.appendReset({ region: 'ram0', guestPhysAddr: ram0.guestPhysAddr, size: KiB4, wallTime: 'x' });
    });
    expect(readJournal(file).lost).toEqual([frame(ram0, 0, { size: MiB2, cause: 'refused' })]);
    withJournal((j) => {
      j.appendReset({ region: 'ram0', guestPhysAddr: ram0.guestPhysAddr, size: ram0.size, wallTime: 'x' });
    });
    const r = readJournal(file);
    expect(r.lost).toEqual([]);
    expect(r.records).toBe(4);
  });
});

describe('formatJournal', () => {
  it('shows regions, lost frames with hex guest physical address, time and cause, and warnings', () => {
    withJournal((j) => {
      j.checkRegion(ram0);
      j.appendLost([
        frame(ram0, 0x12345000),
        frame(ram0, 0x200000, { size: MiB2, cause: 'refused', reason: 'vfio', wallTime: '2024-05-02T08:30:00.000Z' }),
      ]);
    });
    fs.appendFileSync(file, '0123');
    const out = formatJournal(readJournal(file));
    const lines = out.trimEnd().split('\n');
    expect(lines[0]).toMatch(/2 lost frames/);
    const regionLine = lines.find((l) => l.startsWith('region'))!;
    expect(regionLine).toContain('ram0');
    expect(regionLine).toContain('0x100000000');
    expect(regionLine).toContain('/dev/hugepages/vm0-ram0');
    expect(regionLine).toContain('1 GiB');
    expect(regionLine).toContain('2 MiB');
    const lost = lines.filter((l) => l.startsWith('lost'));
    expect(lost).toHaveLength(2);
    expect(lost[0]).toContain('ram0');
    expect(lost[0]).toContain('0x112345000');
    expect(lost[0]).toContain('2024-05-01T12:00:00.000Z');
    expect(lost[0]).toContain('recovered');
    expect(lost[1]).toContain('0x100200000');
    expect(lost[1]).toContain('2 MiB');
    expect(lost[1]).toContain('refused');
    expect(lost[1]).toContain('vfio');
    expect(lines.at(-1)).toMatch(/^warning ERR_JOURNAL_TORN_TAIL at byte \d+/);
  });

  it('keeps one record on one line whatever the strings contain', () => {
    const odd: RegionLayout = { ...ram1, name: 'ram 1\nfake line' };
    withJournal((j) => {
      j.checkRegion(odd);
      j.appendLost([frame(odd, 0x1000, { reason: 'a\nb' })]);
    });
    const out = formatJournal(readJournal(file));
    expect(out.trimEnd().split('\n')).toHaveLength(3);
    expect(out).toContain(JSON.stringify('ram 1\nfake line'));
  });

  it('formats an empty journal', () => {
    withJournal(() => undefined);
    expect(formatJournal(readJournal(file))).toBe('journal: 0 records, 0 regions, 0 lost frames, 0 warnings\n');
  });
});

describe('Journal: argument validation', () => {
  it('bad arguments throw ERR_INVALID_ARG and leave the file byte-identical', () => {
    withJournal((j) => {
      j.checkRegion(ram0);
      j.appendLost([frame(ram0, 0x1000)]);
      const before = fs.readFileSync(file);
      const good = frame(ram0, 0x2000);
      const bad: [string, () => void][] = [
        ['layout not an object', () => j.checkRegion(null as unknown as RegionLayout)],
        ['empty name', () => j.checkRegion({ ...ram1, name: '' })],
        ['path not a string', () => j.checkRegion({ ...ram1, path: 3 as unknown as string })],
        ['size 0', () => j.checkRegion({ ...ram1, size: 0 })],
        ['negative offset', () => j.checkRegion({ ...ram1, offset: -1 })],
        ['fractional size', () => j.checkRegion({ ...ram1, size: 1.5 })],
        ['gpa a number', () => j.checkRegion({ ...ram1, guestPhysAddr: 0 as unknown as bigint })],
        ['negative gpa', () => j.checkRegion({ ...ram1, guestPhysAddr: -1n })],
        ['gpa beyond 64 bits', () => j.checkRegion({ ...ram1, guestPhysAddr: 1n << 64n })],
        ['hugePageSize NaN', () => j.checkRegion({ ...ram1, hugePageSize: NaN })],
        ['frames not an array', () => j.appendLost(good as unknown as LostFrame[])],
        ['frame gpa a number', () => j.appendLost([good, { ...good, guestPhysAddr: 4096 as unknown as bigint }])],
        ['frame size negative', () => j.appendLost([good, { ...good, size: -4096 }])],
        ['frame offset fractional', () => j.appendLost([good, { ...good, offset: 0.5 }])],
        ['frame bad cause', () => j.appendLost([good, { ...good, cause: 'gone' as unknown as 'recovered' }])],
        ['frame reason not a string', () => j.appendLost([good, { ...good, reason: 5 as unknown as string }])],
        ['frame wallTime missing', () => j.appendLost([good, { ...good, wallTime: undefined as unknown as string }])],
        ['frame unknown region', () => j.appendLost([good, frame(ram1, 0x1000)])],
        ['frame outside its region', () => j.appendLost([good, frame(ram0, GiB1 - KiB4, { size: MiB2 })])],
        ['frame gpa inconsistent with offset', () => j.appendLost([good, { ...good, offset: 0x3000 }])],
        ['frame null', () => j.appendLost([good, null as unknown as LostFrame])],
        ['reset not an object', () => j.appendReset(undefined as unknown as never)],
        ['reset gpa a string', () => j.appendReset({ region: 'ram0', guestPhysAddr: '0x0' as unknown as bigint, size: 4096, wallTime: '' })],
        ['reset size 0', () => j.appendReset({ region: 'ram0', guestPhysAddr: 0n, size: 0, wallTime: '' })],
        ['reset unknown region', () => j.appendReset({ region: 'nope', guestPhysAddr: 0n, size: 4096, wallTime: '' })],
      ];
      for (const [what, fn] of bad) {
        expect([what, codeOf(fn)]).toEqual([what, 'ERR_INVALID_ARG']);
        expect([what, fs.readFileSync(file).equals(before)]).toEqual([what, true]);
      }
    });
    const r = readJournal(file);
    expect(r.records).toBe(2);
    expect(r.regions.size).toBe(1);
  });

  it('bad paths throw ERR_INVALID_ARG', () => {
    expect(codeOf(() => Journal.open('' as string))).toBe('ERR_INVALID_ARG');
    expect(codeOf(() => Journal.open(5 as unknown as string))).toBe('ERR_INVALID_ARG');
    expect(codeOf(() => readJournal(undefined as unknown as string))).toBe('ERR_INVALID_ARG');
  });
});
