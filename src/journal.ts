/**
 * Durable journal of lost guest frames.
 *
 * The engine writes a record here BEFORE it reports a loss, so that after a VMM restart (live update)
 * the journal is the truth about which guest frames are gone: `RasEngine.open` replays it, re-protects
 * the frames when their region is mapped again and reports them.
 *
 * File format (version 1): append-only text, one record per line:
 *
 *     <crc32 of the JSON bytes, 8 lowercase hex digits> <JSON>\n
 *
 * The JSON always carries `"v":1` and a `type`:
 *   - `region`: `{ name, path, size, offset, guestPhysAddr, hugePageSize, wallTime }` (first mapping)
 *   - `lost`:   `{ region, guestPhysAddr, size, offset, cause, reason?, wallTime }` (one line per frame)
 *   - `reset`:  `{ region, guestPhysAddr, size, wallTime }`
 * Bigints are hex strings ("0x1f000"). There is no header record: an empty file is an empty journal.
 *
 * Durability: every append is one write(2) of all its lines followed by fsync(2); creating the file
 * also fsyncs its directory. A line without its final newline at the end of the file is a torn tail
 * (power loss mid-write): it is reported (`ERR_JOURNAL_TORN_TAIL`) and, by `Journal.open` only,
 * truncated away so later appends stay replayable. A complete line whose checksum or content is wrong
 * is reported (`ERR_JOURNAL_BAD_RECORD`) and skipped; the records around it are kept.
 *
 * Permissions: the file is created with mode 0600 (forced with fchmod, whatever the umask). An existing
 * journal that grants any permission to group or others is REFUSED by `Journal.open`
 * (`ERR_JOURNAL_PERMISSIONS`); it is never chmod-ed behind the operator's back, because such a file may
 * already have been modified by someone else. `readJournal` (read-only, for the CLI) does not check it.
 */
import * as fs from 'fs';
import * as nodePath from 'path';
import { crc32 } from 'zlib';

export interface RegionLayout {
  name: string;
  path: string;
  size: number;
  offset: number;
  guestPhysAddr: bigint;
  hugePageSize: number;
}

/** recovered: lost while its huge page was split; refused: whole huge page lost; split-poison: a 4 KiB page lost in memory that was already split. */
export type LostCause = 'recovered' | 'refused' | 'split-poison' | 'lost-access' | 'replayed';

export interface LostFrame {
  region: string;
  guestPhysAddr: bigint;
  /** 4096 or a whole huge page */
  size: number;
  /** byte offset in the region */
  offset: number;
  cause: LostCause;
  reason?: string;
  /** ISO date, for humans only */
  wallTime: string;
}

export interface ResetRecord {
  region: string;
  guestPhysAddr: bigint;
  size: number;
  wallTime: string;
}

export interface JournalWarning {
  code: 'ERR_JOURNAL_TORN_TAIL' | 'ERR_JOURNAL_BAD_RECORD';
  byteOffset: number;
  message: string;
}

export interface JournalReplay {
  regions: Map<string, RegionLayout>;
  /** net: frames lost and not cleared by a later reset record covering them */
  lost: LostFrame[];
  warnings: JournalWarning[];
  /** good records read */
  records: number;
}

export const JOURNAL_FORMAT_VERSION = 1;

const LOST_CAUSES: readonly LostCause[] = ['recovered', 'refused', 'split-poison', 'lost-access', 'replayed'];
const LAYOUT_FIELDS = ['path', 'size', 'offset', 'guestPhysAddr', 'hugePageSize'] as const;
const MAX_U64 = (1n << 64n) - 1n;

type ErrorExtra = Record<string, unknown>;

function codedError(code: string, message: string, extra: ErrorExtra = {}): Error & { code: string } {
  return Object.assign(new Error(message), { code }, extra);
}

function invalidArg(message: string): Error {
  return codedError('ERR_INVALID_ARG', message);
}

// ---------------------------------------------------------------------------------------------------
// Validation (shared by the append path, where it throws ERR_INVALID_ARG, and by replay, where a
// checksummed record that fails it is reported as a bad record).

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function checkString(v: unknown, what: string, allowEmpty = false): string | undefined {
  if (typeof v !== 'string') return `${what} must be a string`;
  if (!allowEmpty && v.length === 0) return `${what} must not be empty`;
  return undefined;
}

function checkInt(v: unknown, what: string, min: number): string | undefined {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min) {
    return `${what} must be an integer >= ${min} (got ${describe(v)})`;
  }
  return undefined;
}

function checkAddr(v: unknown, what: string): string | undefined {
  if (typeof v !== 'bigint' || v < 0n || v > MAX_U64) {
    return `${what} must be a bigint in [0, 2^64) (got ${describe(v)})`;
  }
  return undefined;
}

function describe(v: unknown): string {
  if (typeof v === 'bigint') return `${v}n`;
  if (typeof v === 'string') return JSON.stringify(v);
  if (typeof v === 'number' || typeof v === 'boolean' || v === null || v === undefined) return String(v);
  return typeof v;
}

function firstProblem(...checks: (string | undefined)[]): string | undefined {
  return checks.find((c) => c !== undefined);
}

function layoutProblem(l: unknown, what: string): string | undefined {
  if (!isObject(l)) return `${what} must be an object`;
  const p = firstProblem(
    checkString(l.name, `${what}.name`),
    checkString(l.path, `${what}.path`),
    checkInt(l.size, `${what}.size`, 1),
    checkInt(l.offset, `${what}.offset`, 0),
    checkAddr(l.guestPhysAddr, `${what}.guestPhysAddr`),
    checkInt(l.hugePageSize, `${what}.hugePageSize`, 1),
  );
  if (p) return p;
  if ((l.guestPhysAddr as bigint) + BigInt(l.size as number) - 1n > MAX_U64) {
    return `${what}: guestPhysAddr + size exceeds the 64-bit address space`;
  }
  return undefined;
}

function frameProblem(f: unknown, what: string): string | undefined {
  if (!isObject(f)) return `${what} must be an object`;
  return firstProblem(
    checkString(f.region, `${what}.region`),
    checkAddr(f.guestPhysAddr, `${what}.guestPhysAddr`),
    checkInt(f.size, `${what}.size`, 1),
    checkInt(f.offset, `${what}.offset`, 0),
    LOST_CAUSES.includes(f.cause as LostCause)
      ? undefined
      : `${what}.cause must be one of ${LOST_CAUSES.join(', ')} (got ${describe(f.cause)})`,
    f.reason === undefined ? undefined : checkString(f.reason, `${what}.reason`, true),
    checkString(f.wallTime, `${what}.wallTime`, true),
  );
}

function resetProblem(r: unknown, what: string): string | undefined {
  if (!isObject(r)) return `${what} must be an object`;
  return firstProblem(
    checkString(r.region, `${what}.region`),
    checkAddr(r.guestPhysAddr, `${what}.guestPhysAddr`),
    checkInt(r.size, `${what}.size`, 1),
    checkString(r.wallTime, `${what}.wallTime`, true),
  );
}

// ---------------------------------------------------------------------------------------------------
// Encoding

const hex = (v: bigint): string => '0x' + v.toString(16);

function encodeLine(obj: Record<string, unknown>): string {
  const json = JSON.stringify({ v: JOURNAL_FORMAT_VERSION, ...obj });
  const crc = crc32(Buffer.from(json, 'utf8')).toString(16).padStart(8, '0');
  return `${crc} ${json}\n`;
}

function copyLayout(l: RegionLayout): RegionLayout {
  return {
    name: l.name,
    path: l.path,
    size: l.size,
    offset: l.offset,
    guestPhysAddr: l.guestPhysAddr,
    hugePageSize: l.hugePageSize,
  };
}

function regionLine(l: RegionLayout, wallTime: string): string {
  return encodeLine({
    type: 'region',
    name: l.name,
    path: l.path,
    size: l.size,
    offset: l.offset,
    guestPhysAddr: hex(l.guestPhysAddr),
    hugePageSize: l.hugePageSize,
    wallTime,
  });
}

function lostLine(f: LostFrame): string {
  const o: Record<string, unknown> = {
    type: 'lost',
    region: f.region,
    guestPhysAddr: hex(f.guestPhysAddr),
    size: f.size,
    offset: f.offset,
    cause: f.cause,
  };
  if (f.reason !== undefined) o.reason = f.reason;
  o.wallTime = f.wallTime;
  return encodeLine(o);
}

function resetLine(r: ResetRecord): string {
  return encodeLine({
    type: 'reset',
    region: r.region,
    guestPhysAddr: hex(r.guestPhysAddr),
    size: r.size,
    wallTime: r.wallTime,
  });
}

// ---------------------------------------------------------------------------------------------------
// Decoding and replay

const HEX_RE = /^[0-9a-f]{8}$/;
const ADDR_RE = /^0x[0-9a-f]+$/;

type Decoded =
  | { type: 'region'; layout: RegionLayout }
  | { type: 'lost'; frame: LostFrame }
  | { type: 'reset'; reset: ResetRecord };

class VersionError extends Error {}

/** Returns the record, or a string describing why the line is bad. Throws VersionError for newer formats. */
function decodeLine(line: Buffer): Decoded | string {
  if (line.length < 10 || line[8] !== 0x20) return 'malformed line (no "<crc32> " prefix)';
  const crcText = line.subarray(0, 8).toString('latin1');
  if (!HEX_RE.test(crcText)) return 'malformed checksum field';
  const body = line.subarray(9);
  const actual = crc32(body);
  if (actual !== parseInt(crcText, 16)) {
    return `checksum mismatch (stored ${crcText}, computed ${actual.toString(16).padStart(8, '0')})`;
  }
  let obj: unknown;
  try {
    obj = JSON.parse(body.toString('utf8'));
  } catch {
    return 'checksum matches but the JSON does not parse';
  }
  if (!isObject(obj)) return 'record is not a JSON object';
  if (typeof obj.v === 'number' && Number.isSafeInteger(obj.v) && obj.v > JOURNAL_FORMAT_VERSION) {
    throw new VersionError(`record format version ${obj.v} (this build reads version ${JOURNAL_FORMAT_VERSION})`);
  }
  if (obj.v !== JOURNAL_FORMAT_VERSION) return `unsupported record version ${describe(obj.v)}`;
  const rec = { ...obj };
  if (rec.guestPhysAddr !== undefined) {
    if (typeof rec.guestPhysAddr !== 'string' || !ADDR_RE.test(rec.guestPhysAddr)) {
      return 'guestPhysAddr is not a hex string';
    }
    rec.guestPhysAddr = BigInt(rec.guestPhysAddr);
  }
  switch (rec.type) {
    case 'region': {
      const p = layoutProblem(rec, 'region record') ?? checkString(rec.wallTime, 'region record.wallTime', true);
      if (p) return p;
      return { type: 'region', layout: copyLayout(rec as unknown as RegionLayout) };
    }
    case 'lost': {
      const p = frameProblem(rec, 'lost record');
      if (p) return p;
      const frame: LostFrame = {
        region: rec.region as string,
        guestPhysAddr: rec.guestPhysAddr as bigint,
        size: rec.size as number,
        offset: rec.offset as number,
        cause: rec.cause as LostCause,
        wallTime: rec.wallTime as string,
      };
      if (rec.reason !== undefined) frame.reason = rec.reason as string;
      return { type: 'lost', frame };
    }
    case 'reset': {
      const p = resetProblem(rec, 'reset record');
      if (p) return p;
      return {
        type: 'reset',
        reset: {
          region: rec.region as string,
          guestPhysAddr: rec.guestPhysAddr as bigint,
          size: rec.size as number,
          wallTime: rec.wallTime as string,
        },
      };
    }
    default:
      return `unknown record type ${describe(rec.type)}`;
  }
}

function sameLayout(a: RegionLayout, b: RegionLayout): boolean {
  return LAYOUT_FIELDS.every((k) => a[k] === b[k]);
}

function frameKey(f: { region: string; guestPhysAddr: bigint; size: number }): string {
  return `${f.region}\u0000${f.guestPhysAddr.toString(16)}\u0000${f.size}`;
}

/** True if the file's first bytes can be the start of a journal line (or it is all NUL: a torn first write). */
function looksLikeJournal(buf: Buffer): boolean {
  if (buf.length === 0) return true;
  if (buf.every((b) => b === 0)) return true;
  const n = Math.min(buf.length, 10);
  for (let i = 0; i < n; i++) {
    const b = buf[i];
    if (i < 8 && !((b >= 0x30 && b <= 0x39) || (b >= 0x61 && b <= 0x66))) return false;
    if (i === 8 && b !== 0x20) return false;
    if (i === 9 && b !== 0x7b) return false;
  }
  return true;
}

interface Parsed {
  replay: JournalReplay;
  /** byte offset of the torn tail, or -1 */
  tornAt: number;
}

function parseJournal(buf: Buffer, file: string, truncating: boolean): Parsed {
  const regions = new Map<string, RegionLayout>();
  const warnings: JournalWarning[] = [];
  let lost: LostFrame[] = [];
  const lostKeys = new Set<string>();
  let records = 0;
  let tornAt = -1;

  let pos = 0;
  while (pos < buf.length) {
    const nl = buf.indexOf(0x0a, pos);
    if (nl === -1) {
      tornAt = pos;
      const action = truncating ? 'truncated' : 'left in place (Journal.open truncates it)';
      warnings.push({
        code: 'ERR_JOURNAL_TORN_TAIL',
        byteOffset: pos,
        message:
          `journal ${file}: incomplete last record at byte ${pos} (${buf.length - pos} bytes, no newline; ` +
          `interrupted write), skipped and ${action}`,
      });
      break;
    }
    const line = buf.subarray(pos, nl);
    let decoded: Decoded | string;
    try {
      decoded = decodeLine(line);
    } catch (e) {
      if (e instanceof VersionError) {
        throw codedError(
          'ERR_JOURNAL_VERSION',
          `journal ${file}: record at byte ${pos} has ${e.message}; refusing to use a journal written by a newer version`,
          { path: file, byteOffset: pos },
        );
      }
      throw e;
    }
    if (typeof decoded === 'string') {
      warnings.push({
        code: 'ERR_JOURNAL_BAD_RECORD',
        byteOffset: pos,
        message: `journal ${file}: bad record at byte ${pos} (${line.length + 1} bytes): ${decoded}; skipped`,
      });
    } else if (decoded.type === 'region') {
      const l = decoded.layout;
      const old = regions.get(l.name);
      if (old && !sameLayout(old, l)) {
        warnings.push({
          code: 'ERR_JOURNAL_BAD_RECORD',
          byteOffset: pos,
          message:
            `journal ${file}: record at byte ${pos} gives region "${l.name}" a layout that conflicts with ` +
            `the one recorded first (${layoutDiff(old, l).map((d) => d.text).join('; ')}); skipped`,
        });
      } else {
        records++;
        if (!old) regions.set(l.name, l);
      }
    } else if (decoded.type === 'lost') {
      records++;
      const key = frameKey(decoded.frame);
      if (!lostKeys.has(key)) {
        lostKeys.add(key);
        lost.push(decoded.frame);
      }
    } else {
      records++;
      const r = decoded.reset;
      const end = r.guestPhysAddr + BigInt(r.size);
      const kept: LostFrame[] = [];
      for (const f of lost) {
        const covered =
          f.region === r.region && f.guestPhysAddr >= r.guestPhysAddr && f.guestPhysAddr + BigInt(f.size) <= end;
        if (covered) lostKeys.delete(frameKey(f));
        else kept.push(f);
      }
      lost = kept;
    }
    pos = nl + 1;
  }
  return { replay: { regions, lost, warnings, records }, tornAt };
}

interface LayoutDifference {
  field: (typeof LAYOUT_FIELDS)[number];
  journal: string | number | bigint;
  requested: string | number | bigint;
  text: string;
}

function layoutDiff(old: RegionLayout, now: RegionLayout): LayoutDifference[] {
  const out: LayoutDifference[] = [];
  for (const field of LAYOUT_FIELDS) {
    if (old[field] === now[field]) continue;
    const show = (v: string | number | bigint): string =>
      typeof v === 'bigint' ? hex(v) : typeof v === 'string' ? JSON.stringify(v) : String(v);
    out.push({
      field,
      journal: old[field],
      requested: now[field],
      text: `${field}: journal has ${show(old[field])}, now ${show(now[field])}`,
    });
  }
  return out;
}

function readAll(fd: number): Buffer {
  const size = fs.fstatSync(fd).size;
  const buf = Buffer.alloc(size);
  let off = 0;
  while (off < size) {
    const n = fs.readSync(fd, buf, off, size - off, off);
    if (n === 0) break;
    off += n;
  }
  return off === size ? buf : buf.subarray(0, off);
}

function checkRegularFile(fd: number, file: string): fs.Stats {
  const st = fs.fstatSync(fd);
  if (!st.isFile()) {
    throw codedError('ERR_JOURNAL_FORMAT', `journal ${file} is not a regular file`, { path: file });
  }
  return st;
}

function checkFormat(buf: Buffer, file: string): void {
  if (!looksLikeJournal(buf)) {
    throw codedError(
      'ERR_JOURNAL_FORMAT',
      `${file} does not look like a hugetlb-ras journal (expected lines "<crc32 hex> {json}"); not touching it`,
      { path: file },
    );
  }
}

function fsyncDirectory(dir: string): void {
  const dfd = fs.openSync(dir, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
  try {
    fs.fsyncSync(dfd);
  } finally {
    fs.closeSync(dfd);
  }
}

/** Read a journal without modifying it (for the CLI). Throws the fs error (e.g. ENOENT) if it cannot be read. */
export function readJournal(path: string): JournalReplay {
  if (typeof path !== 'string' || path.length === 0) throw invalidArg('journal path must be a non-empty string');
  const fd = fs.openSync(path, fs.constants.O_RDONLY);
  try {
    checkRegularFile(fd, path);
    const buf = readAll(fd);
    checkFormat(buf, path);
    return parseJournal(buf, path, false).replay;
  } finally {
    fs.closeSync(fd);
  }
}

// ---------------------------------------------------------------------------------------------------

export class Journal {
  readonly path: string;
  private fd: number;
  private size: number;
  private readonly regions: Map<string, RegionLayout>;
  /** set when an fsync failed: the kernel may have dropped the data, the file state is unknown */
  private failed: Error | undefined;

  private constructor(path: string, fd: number, size: number, regions: Map<string, RegionLayout>) {
    this.path = path;
    this.fd = fd;
    this.size = size;
    this.regions = regions;
  }

  /**
   * Opens (creating it with mode 0600 if missing) and replays the journal. A torn tail is reported in
   * `replay.warnings` and truncated. Throws `ERR_JOURNAL_PERMISSIONS` if an existing journal is accessible
   * by group or others, `ERR_JOURNAL_FORMAT` if the file is not a journal, `ERR_JOURNAL_VERSION` if it was
   * written by a newer format version.
   */
  static open(path: string): { journal: Journal; replay: JournalReplay } {
    if (typeof path !== 'string' || path.length === 0) throw invalidArg('journal path must be a non-empty string');
    const { O_RDWR, O_APPEND, O_CREAT, O_EXCL } = fs.constants;
    let fd: number;
    let created = false;
    try {
      fd = fs.openSync(path, O_RDWR | O_APPEND | O_CREAT | O_EXCL, 0o600);
      created = true;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      fd = fs.openSync(path, O_RDWR | O_APPEND);
    }
    try {
      if (created) {
        fs.fchmodSync(fd, 0o600); // the umask may have removed bits; make it exactly 0600
        fs.fsyncSync(fd);
        fsyncDirectory(nodePath.dirname(nodePath.resolve(path)));
        const replay: JournalReplay = { regions: new Map(), lost: [], warnings: [], records: 0 };
        return { journal: new Journal(path, fd, 0, new Map()), replay };
      }
      const st = checkRegularFile(fd, path);
      if ((st.mode & 0o077) !== 0) {
        const mode = (st.mode & 0o777).toString(8).padStart(4, '0');
        throw codedError(
          'ERR_JOURNAL_PERMISSIONS',
          `journal ${path} has mode ${mode}: it must not be accessible by group or others ` +
            `(it may have been altered); check it, then run: chmod 600 ${path}`,
          { path, mode: st.mode & 0o777 },
        );
      }
      const buf = readAll(fd);
      checkFormat(buf, path);
      const { replay, tornAt } = parseJournal(buf, path, true);
      let size = buf.length;
      if (tornAt >= 0) {
        fs.ftruncateSync(fd, tornAt);
        fs.fsyncSync(fd);
        size = tornAt;
      }
      const regions = new Map<string, RegionLayout>();
      for (const [k, v] of replay.regions) regions.set(k, copyLayout(v));
      return { journal: new Journal(path, fd, size, regions), replay };
    } catch (e) {
      try {
        fs.closeSync(fd);
      } catch {
        /* keep the original error */
      }
      throw e;
    }
  }

  /**
   * Records a region's layout the first time it is mapped (durably); no-op if the journal already has the
   * identical layout; throws `ERR_JOURNAL_LAYOUT_MISMATCH` (with `region` and `differences`) if it has a
   * different one.
   */
  checkRegion(layout: RegionLayout): void {
    const p = layoutProblem(layout, 'layout');
    if (p) throw invalidArg(p);
    this.usable();
    const old = this.regions.get(layout.name);
    if (old) {
      const differences = layoutDiff(old, layout);
      if (differences.length === 0) return;
      throw codedError(
        'ERR_JOURNAL_LAYOUT_MISMATCH',
        `journal ${this.path} was written for a different layout of region "${layout.name}": ` +
          differences.map((d) => d.text).join('; '),
        {
          region: layout.name,
          differences: differences.map(({ field, journal, requested }) => ({ field, journal, requested })),
        },
      );
    }
    const copy = copyLayout(layout);
    this.append(regionLine(copy, new Date().toISOString()));
    this.regions.set(copy.name, copy);
  }

  /**
   * Appends lost frames (one line each) with one write and one fsync. Every frame must belong to a region
   * passed to `checkRegion` (or replayed), lie inside it, and have
   * `guestPhysAddr === region.guestPhysAddr + offset`. Nothing is written if any frame is invalid.
   */
  appendLost(frames: LostFrame[]): void {
    if (!Array.isArray(frames)) throw invalidArg('frames must be an array');
    for (let i = 0; i < frames.length; i++) {
      const what = `frames[${i}]`;
      const p = frameProblem(frames[i], what);
      if (p) throw invalidArg(p);
      const f = frames[i];
      const layout = this.regions.get(f.region);
      if (!layout) throw invalidArg(`${what}.region "${f.region}" is not a region known to the journal (checkRegion first)`);
      if (f.offset + f.size > layout.size) {
        throw invalidArg(
          `${what} [offset ${f.offset}, size ${f.size}] lies outside region "${f.region}" (size ${layout.size})`,
        );
      }
      if (f.guestPhysAddr !== layout.guestPhysAddr + BigInt(f.offset)) {
        throw invalidArg(
          `${what}.guestPhysAddr ${hex(f.guestPhysAddr)} does not match region "${f.region}" base ` +
            `${hex(layout.guestPhysAddr)} + offset 0x${f.offset.toString(16)}`,
        );
      }
    }
    this.usable();
    if (frames.length === 0) return;
    this.append(frames.map(lostLine).join(''));
  }

  /** Appends a reset: it clears the lost frames of that region lying inside [guestPhysAddr, guestPhysAddr+size). */
  appendReset(rec: ResetRecord): void {
    const p = resetProblem(rec, 'reset');
    if (p) throw invalidArg(p);
    if (!this.regions.has(rec.region)) {
      throw invalidArg(`reset.region "${rec.region}" is not a region known to the journal (checkRegion first)`);
    }
    this.usable();
    this.append(resetLine(rec));
  }

  /** Closes the file. Idempotent. */
  close(): void {
    if (this.fd < 0) return;
    const fd = this.fd;
    this.fd = -1;
    fs.closeSync(fd);
  }

  private usable(): void {
    if (this.fd < 0) throw codedError('ERR_JOURNAL_CLOSED', `journal ${this.path} is closed`);
    if (this.failed) {
      throw codedError(
        'ERR_JOURNAL_FAILED',
        `journal ${this.path}: an earlier fsync failed (${this.failed.message}); reopen the journal`,
        { cause: this.failed },
      );
    }
  }

  private append(text: string): void {
    const buf = Buffer.from(text, 'utf8');
    let off = 0;
    try {
      while (off < buf.length) off += fs.writeSync(this.fd, buf, off, buf.length - off);
    } catch (e) {
      // e.g. ENOSPC after a partial write: cut the partial record so the next append starts on a clean line.
      try {
        fs.ftruncateSync(this.fd, this.size);
      } catch {
        this.failed = e as Error;
      }
      throw e;
    }
    try {
      fs.fsyncSync(this.fd);
    } catch (e) {
      // After a failed fsync, Linux may have dropped the dirty pages and cleared the error: the on-disk state
      // is unknown, so refuse further appends on this handle (a reopen replays what really is there).
      this.failed = e as Error;
      try {
        fs.ftruncateSync(this.fd, this.size);
      } catch {
        /* keep the original error */
      }
      throw e;
    }
    this.size += buf.length;
  }
}

// ---------------------------------------------------------------------------------------------------
// Human form (for the CLI)

function humanSize(n: number): string {
  const units: [number, string][] = [
    [2 ** 30, 'GiB'],
    [2 ** 20, 'MiB'],
    [2 ** 10, 'KiB'],
  ];
  for (const [u, name] of units) if (n >= u && n % u === 0) return `${n / u} ${name}`;
  return `${n} B`;
}

/** Quotes a string if it contains spaces, quotes or control characters (so one record stays one line). */
function text(s: string): string {
  return /^[\x21-\x7e\u00a0-\u2027\u202a-\uffff]+$/.test(s) && !s.includes('"') ? s : JSON.stringify(s);
}

/** Human form: a summary line, one line per region layout, one per lost frame, one per warning. */
export function formatJournal(replay: JournalReplay): string {
  const lines: string[] = [];
  const nRegions = replay.regions.size;
  lines.push(
    `journal: ${replay.records} record${replay.records === 1 ? '' : 's'}, ${nRegions} region${nRegions === 1 ? '' : 's'}, ` +
      `${replay.lost.length} lost frame${replay.lost.length === 1 ? '' : 's'}, ` +
      `${replay.warnings.length} warning${replay.warnings.length === 1 ? '' : 's'}`,
  );
  for (const r of replay.regions.values()) {
    const last = r.guestPhysAddr + BigInt(r.size) - 1n;
    lines.push(
      `region  ${text(r.name)}  gpa ${hex(r.guestPhysAddr)}-${hex(last)}  size ${humanSize(r.size)}  ` +
        `huge page ${humanSize(r.hugePageSize)}  file ${text(r.path)} @ offset 0x${r.offset.toString(16)}`,
    );
  }
  for (const f of replay.lost) {
    lines.push(
      `lost    ${text(f.region)}  gpa ${hex(f.guestPhysAddr)}  ${humanSize(f.size)}  offset 0x${f.offset.toString(16)}  ` +
        `at ${text(f.wallTime || '?')}  cause ${f.cause}${f.reason !== undefined ? ` (${text(f.reason)})` : ''}`,
    );
  }
  for (const w of replay.warnings) {
    lines.push(`warning ${w.code} at byte ${w.byteOffset}: ${w.message}`);
  }
  return lines.join('\n') + '\n';
}
