// Issue 22 #3, the parts a host without /dev/kvm can prove: the migration stream's format (versioned,
// refuses what it does not know, truncation is an error), and guest RAM through it with the guarded
// copy: a lost frame is never sent, its destination bytes are never written, every healthy byte
// arrives; KVM's dirty bitmap becomes the right runs of frames.
import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { hugeFile, MiB, openEngine, seededBytes, SUB } from './helpers';
import { REC, StreamReader, StreamWriter, parseRam, parseState, MAGIC } from '../vmm/src/migration/stream';
import { dirtyRuns, countBits, emptyCount, receiveFrames, sendFrames } from '../vmm/src/migration/ram';
import { exportLost, importLost, lostFrames } from '../vmm/src/migration/lost';

async function collect(bytes: Buffer): Promise<{ type: number; payload: Buffer }[]> {
  const p = new PassThrough();
  p.end(bytes);
  const rd = new StreamReader(p);
  await rd.header();
  const out = [];
  for (let r = await rd.next(); r; r = await rd.next()) out.push(r);
  return out;
}

function sink(): { out: PassThrough; bytes: () => Buffer } {
  const out = new PassThrough();
  const chunks: Buffer[] = [];
  out.on('data', (c: Buffer) => chunks.push(c));
  return { out, bytes: () => Buffer.concat(chunks) };
}

describe('migration stream', () => {
  it('round-trips CONFIG, MANIFEST, RAM, STATE and END records in order', async () => {
    const s = sink();
    const w = new StreamWriter(s.out);
    await w.header();
    await w.json(REC.CONFIG, { vcpus: 2 });
    await w.json(REC.MANIFEST, { format: 'hugetlb-ras-lost', version: 1, regions: [] });
    const ram = seededBytes(5, 3 * SUB);
    await w.ram(0x201000n, ram);
    await w.state([Buffer.from([1, 2, 3]), Buffer.alloc(0)], Buffer.from('clock'));
    await w.json(REC.END, { rounds: 1 });
    s.out.end();
    const recs = await collect(s.bytes());
    expect(recs.map((r) => r.type)).toEqual([REC.CONFIG, REC.MANIFEST, REC.RAM, REC.STATE, REC.END]);
    expect(JSON.parse(recs[0].payload.toString())).toEqual({ vcpus: 2 });
    const r = parseRam(recs[2].payload);
    expect(r.gpa).toBe(0x201000n);
    expect(r.data.equals(ram)).toBe(true);
    const st = parseState(recs[3].payload);
    expect(st.vcpus.map((b) => [...b])).toEqual([[1, 2, 3], []]);
    expect(st.vm.toString()).toBe('clock');
    expect(w.bytes).toBe(s.bytes().length);
  });

  it('refuses a bad magic, another version, an unknown record type and a truncated record', async () => {
    const good = sink();
    const w = new StreamWriter(good.out);
    await w.header();
    await w.ram(0n, Buffer.alloc(SUB, 9));
    const bytes = good.bytes();
    const bad = Buffer.from(bytes);
    bad[0] ^= 1;
    await expect(collect(bad)).rejects.toThrow(/bad magic/);
    const v2 = Buffer.from(bytes);
    v2.writeUInt32LE(2, 8);
    await expect(collect(v2)).rejects.toThrow(/version 2/);
    const unk = Buffer.from(bytes);
    unk[16] = 99;
    await expect(collect(unk)).rejects.toThrow(/unknown record type 99/);
    await expect(collect(bytes.subarray(0, bytes.length - 1))).rejects.toThrow(/truncated record/);
    await expect(collect(Buffer.alloc(0))).rejects.toThrow(/no header/);
    expect(bytes.subarray(0, 8).equals(MAGIC)).toBe(true);
    expect(() => w.ram(0x800n, Buffer.alloc(SUB))).toThrow(/whole 4 KiB frames/);
  });

  it('a destination refuses a stream that does not start with CONFIG, before it opens anything', async () => {
    const { migrateIn } = await import('../vmm/src/migration/destination');
    const s = sink();
    const w = new StreamWriter(s.out);
    await w.header();
    await w.ram(0n, Buffer.alloc(SUB));
    s.out.end();
    const p = new PassThrough();
    p.end(s.bytes());
    await expect(migrateIn(p)).rejects.toThrow(/first record is not CONFIG/);
    const empty = new PassThrough();
    empty.end();
    await expect(migrateIn(empty)).rejects.toThrow(/no header/);
  });

  it('dirty bitmaps become runs of frames', () => {
    const b = Buffer.alloc(16);
    for (const i of [0, 1, 2, 7, 8, 63, 64, 100]) b[i >> 3] |= 1 << (i & 7);
    expect(dirtyRuns(b, 128)).toEqual([[0, 3], [7, 2], [63, 2], [100, 1]]);
    expect(countBits(b)).toBe(8);
    b.fill(0xff);
    expect(dirtyRuns(b, 70)).toEqual([[0, 70]]);
  });
});

describe('guest RAM through the stream (guarded copy)', () => {
  it('never sends a lost frame, never writes one at the destination, and carries every healthy byte', async () => {
    const src = openEngine();
    const gpa = 0x1000000n;
    const a = src.mapRegion({ name: 'ram', path: hugeFile('migrate-src'), size: 4 * MiB, guestPhysAddr: gpa });
    const data = seededBytes(11, a.size);
    data.fill(0, 3 * MiB, 3 * MiB + 5 * SUB); // zero frames: skipped in the first pass
    a.write(0, data);
    const lost = [2 * SUB, 2 * MiB + 9 * SUB];
    for (const off of lost) src.injectPoison(a, off, { mode: 'simulate' });
    await src.whenIdle({ timeoutMs: 10_000 });
    const s = sink();
    const w = new StreamWriter(s.out);
    await w.header();
    const c = emptyCount();
    await sendFrames(w, a, 0, a.size / 4096, true, c);
    s.out.end();
    expect(c).toEqual({ sent: 1024 - 2 - 5, lost: 2, zero: 5, bytes: (1024 - 7) * 4096 });
    const recs = await collect(s.bytes());
    const sent = new Set<number>();
    for (const r of recs) {
      const { gpa: g, data: d } = parseRam(r.payload);
      for (let k = 0; k < d.length / SUB; k++) sent.add(Number(g - gpa) + k * SUB);
    }
    for (const off of lost) expect(sent.has(off)).toBe(false);
    expect(sent.size).toBe(c.sent);

    // The destination: pre-filled with 0xaa, so a frame that was never written shows it.
    const dst = openEngine();
    const b = dst.mapRegion({ name: 'other-name', path: hugeFile('migrate-dst'), size: 4 * MiB, guestPhysAddr: gpa });
    b.write(0, Buffer.alloc(b.size, 0xaa));
    for (const r of recs) {
      const { gpa: g, data: d } = parseRam(r.payload);
      expect(receiveFrames([b], g, d)).toEqual([]);
    }
    const got = b.read(0, b.size);
    for (let off = 0; off < b.size; off += SUB) {
      const want = lost.includes(off) || (off >= 3 * MiB && off < 3 * MiB + 5 * SUB) ? Buffer.alloc(SUB, 0xaa) : data.subarray(off, off + SUB);
      if (!got.subarray(off, off + SUB).equals(want)) throw new Error(`frame at ${off} differs`);
    }
    expect(() => receiveFrames([b], gpa + BigInt(4 * MiB), Buffer.alloc(SUB))).toThrow(/in no region/);
  });

  it('the manifest travels in the stream: imported at the destination before the data, the data then skips those frames, a later manifest adds the frames lost since', async () => {
    const src = openEngine();
    const gpa = 0x3000000n;
    const a = src.mapRegion({ name: 'src', path: hugeFile('migrate-m-src'), size: 2 * MiB, guestPhysAddr: gpa });
    const data = seededBytes(21, a.size);
    a.write(0, data);
    src.injectPoison(a, 5 * SUB, { mode: 'simulate' });
    await src.whenIdle({ timeoutMs: 10_000 });
    const s = sink();
    const w = new StreamWriter(s.out);
    await w.header();
    await w.json(REC.MANIFEST, exportLost(src));
    await sendFrames(w, a, 0, a.size / 4096, true, emptyCount());
    // Lost after its data was sent (between rounds): only the final manifest says so.
    src.injectPoison(a, 300 * SUB, { mode: 'simulate' });
    await src.whenIdle({ timeoutMs: 10_000 });
    await w.json(REC.MANIFEST, exportLost(src));
    s.out.end();
    const dst = openEngine();
    const b = dst.mapRegion({ name: 'dst', path: hugeFile('migrate-m-dst'), size: 2 * MiB, guestPhysAddr: gpa });
    const imports = [];
    let skipped: number[] = [];
    for (const r of await collect(s.bytes())) {
      if (r.type === REC.MANIFEST) {
        const m = JSON.parse(r.payload.toString());
        imports.push({ frames: lostFrames(m), ...importLost(dst, m) });
      } else {
        const { gpa: g, data: d } = parseRam(r.payload);
        skipped = skipped.concat(receiveFrames([b], g, d));
      }
    }
    expect(imports).toEqual([
      { frames: 1, imported: 1, alreadyLost: 0 },
      { frames: 2, imported: 1, alreadyLost: 1 },
    ]);
    expect(skipped).toEqual([]); // the lost frame was never in the stream
    expect(dst.lostPages().map((l) => [l.guestPhysAddr, l.cause])).toEqual([
      [gpa + BigInt(5 * SUB), 'imported'],
      [gpa + BigInt(300 * SUB), 'imported'],
    ]);
    const r = b.readAvailable(0, b.size);
    expect(r.lostOffsets).toEqual([5 * SUB, 300 * SUB]);
    for (let off = 0; off < b.size; off += SUB) {
      if (off === 5 * SUB || off === 300 * SUB) continue;
      if (!r.data.subarray(off, off + SUB).equals(data.subarray(off, off + SUB))) throw new Error(`frame ${off} differs`);
    }
  });
});
