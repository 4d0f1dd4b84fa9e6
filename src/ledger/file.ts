/**
 * Durable journal of lost guest frames: the file (open, append, fsync, torn-tail recovery).
 *
 * The engine writes a record here BEFORE it reports a loss, so that after a VMM restart (live update)
 * the journal is the truth about which guest frames are gone: `RasEngine.open` replays it, re-protects
 * the frames when their region is mapped again and reports them. The record format is in format.ts.
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
import { invalidArg, RasError } from '../errors';
import { looksLikeJournal, lostLine, regionLine, resetLine } from './format';
import { parseJournal } from './parse';
import {
  copyLayout,
  frameProblem,
  hex,
  layoutDiff,
  layoutProblem,
  resetProblem,
  type JournalReplay,
  type LostFrame,
  type RegionLayout,
  type ResetRecord,
} from './records';

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
    throw new RasError('ERR_JOURNAL_FORMAT', `journal ${file} is not a regular file`, { path: file });
  }
  return st;
}

function checkFormat(buf: Buffer, file: string): void {
  if (!looksLikeJournal(buf)) {
    throw new RasError(
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
        throw new RasError(
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
      throw new RasError(
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
    if (this.fd < 0) throw new RasError('ERR_JOURNAL_CLOSED', `journal ${this.path} is closed`);
    if (this.failed) {
      throw new RasError(
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
