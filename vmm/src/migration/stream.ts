// The reference VMM's migration stream (a snapshot is the same bytes in a file): a header, then
// records [u8 type][3 bytes 0][u32 length LE][payload]. Versioned: a reader refuses another
// version or an unknown record type rather than guess.
//
//   header   "HRASVMM\0" (8 bytes) u32 version (1) u32 0
//   CONFIG   JSON { vcpus, seed, regions: [{ name, pageSize, size, guestPhysAddr: '0x..' }] }
//   MANIFEST JSON: engine.exportLost() (hugetlb-ras-lost v1); may come more than once (each adds)
//   RAM      u64 gpa, u32 frames, u32 0, then frames * 4096 bytes: consecutive healthy frames
//   STATE    u32 vcpus, then per vCPU u32 length + bytes, then u32 length + the VM's bytes
//   END      JSON { rounds, ... }: nothing follows
import type { Readable, Writable } from 'node:stream';

export const MAGIC = Buffer.from('HRASVMM\0', 'latin1');
export const VERSION = 1;
export const FRAME = 4096;

export const REC = { CONFIG: 1, MANIFEST: 2, RAM: 3, STATE: 4, END: 5 } as const;
export type RecordType = (typeof REC)[keyof typeof REC];
const TYPES = new Set<number>(Object.values(REC));

export interface StreamRecord { type: RecordType; payload: Buffer }

export class StreamError extends Error {
  constructor(message: string) {
    super(`migration stream: ${message}`);
    this.name = 'StreamError';
  }
}

/** Writes records to a Writable, waiting for 'drain' when it asks (a socket to a slower destination). */
export class StreamWriter {
  bytes = 0;
  constructor(private readonly out: Writable) {}

  private async put(b: Buffer): Promise<void> {
    this.bytes += b.length;
    if (!this.out.write(b)) {
      await new Promise<void>((resolve, reject) => {
        const onErr = (e: Error) => {
          this.out.off('drain', onDrain);
          reject(e);
        };
        const onDrain = () => {
          this.out.off('error', onErr);
          resolve();
        };
        this.out.once('drain', onDrain);
        this.out.once('error', onErr);
      });
    }
  }

  async header(): Promise<void> {
    const h = Buffer.alloc(16);
    MAGIC.copy(h, 0);
    h.writeUInt32LE(VERSION, 8);
    await this.put(h);
  }

  async record(type: RecordType, ...parts: Buffer[]): Promise<void> {
    const len = parts.reduce((a, p) => a + p.length, 0);
    if (len > 0xffffffff) throw new StreamError('record larger than 4 GiB');
    const h = Buffer.alloc(8);
    h.writeUInt8(type, 0);
    h.writeUInt32LE(len, 4);
    await this.put(h);
    for (const p of parts) await this.put(p);
  }

  json(type: RecordType, v: unknown): Promise<void> {
    return this.record(type, Buffer.from(JSON.stringify(v), 'utf8'));
  }

  /** Frames [gpa, gpa + data.length) of guest RAM. */
  ram(gpa: bigint, data: Buffer): Promise<void> {
    if (data.length % FRAME || gpa % BigInt(FRAME)) throw new StreamError('RAM record not in whole 4 KiB frames');
    const h = Buffer.alloc(16);
    h.writeBigUInt64LE(gpa, 0);
    h.writeUInt32LE(data.length / FRAME, 8);
    return this.record(REC.RAM, h, data);
  }

  state(vcpus: Buffer[], vm: Buffer): Promise<void> {
    const parts: Buffer[] = [u32(vcpus.length)];
    for (const v of vcpus) parts.push(u32(v.length), v);
    parts.push(u32(vm.length), vm);
    return this.record(REC.STATE, ...parts);
  }
}

function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n, 0);
  return b;
}

/** Reads records from a Readable (a socket, a file stream); checks the header first. */
export class StreamReader {
  private chunks: Buffer[] = [];
  private have = 0;
  private ended = false;
  private readonly it: AsyncIterator<Buffer>;
  bytes = 0;

  constructor(input: Readable) {
    this.it = (input[Symbol.asyncIterator]() as AsyncIterator<Buffer>);
  }

  private async fill(n: number): Promise<boolean> {
    while (this.have < n && !this.ended) {
      const r = await this.it.next();
      if (r.done) this.ended = true;
      else {
        const b = Buffer.isBuffer(r.value) ? r.value : Buffer.from(r.value);
        this.chunks.push(b);
        this.have += b.length;
      }
    }
    return this.have >= n;
  }

  private take(n: number): Buffer {
    const all = this.chunks.length === 1 ? this.chunks[0] : Buffer.concat(this.chunks, this.have);
    const out = Buffer.from(all.subarray(0, n));
    const rest = all.subarray(n);
    this.chunks = rest.length ? [rest] : [];
    this.have = rest.length;
    this.bytes += n;
    return out;
  }

  async header(): Promise<void> {
    if (!(await this.fill(16))) throw new StreamError('no header (empty or truncated)');
    const h = this.take(16);
    if (!h.subarray(0, 8).equals(MAGIC)) throw new StreamError('not a hugetlb-ras VMM stream (bad magic)');
    const v = h.readUInt32LE(8);
    if (v !== VERSION) throw new StreamError(`version ${v}, this VMM reads ${VERSION}`);
  }

  /** The next record, or null at a clean end of input (a truncated record throws). */
  async next(): Promise<StreamRecord | null> {
    if (!(await this.fill(8))) {
      if (this.have === 0) return null;
      throw new StreamError('truncated record header');
    }
    const h = this.take(8);
    const type = h.readUInt8(0);
    const len = h.readUInt32LE(4);
    if (!TYPES.has(type)) throw new StreamError(`unknown record type ${type}`);
    if (!(await this.fill(len))) throw new StreamError(`truncated record (type ${type}, ${len} bytes announced)`);
    return { type: type as RecordType, payload: this.take(len) };
  }
}

export function parseRam(p: Buffer): { gpa: bigint; data: Buffer } {
  if (p.length < 16) throw new StreamError('short RAM record');
  const gpa = p.readBigUInt64LE(0);
  const frames = p.readUInt32LE(8);
  if (p.length !== 16 + frames * FRAME) throw new StreamError(`RAM record of ${p.length} bytes for ${frames} frames`);
  return { gpa, data: p.subarray(16) };
}

export function parseState(p: Buffer): { vcpus: Buffer[]; vm: Buffer } {
  let o = 0;
  const rd = (): Buffer => {
    if (o + 4 > p.length) throw new StreamError('truncated STATE record');
    const n = p.readUInt32LE(o);
    o += 4;
    if (o + n > p.length) throw new StreamError('truncated STATE record');
    const b = p.subarray(o, o + n);
    o += n;
    return b;
  };
  if (p.length < 4) throw new StreamError('truncated STATE record');
  const count = p.readUInt32LE(0);
  o = 4;
  const vcpus: Buffer[] = [];
  for (let i = 0; i < count; i++) vcpus.push(rd());
  const vm = rd();
  if (o !== p.length) throw new StreamError('trailing bytes in STATE record');
  return { vcpus, vm };
}
