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
 * already have been modified by someone else. So is a journal another user owns. `readJournal`
 * (read-only, for the CLI) does not check either.
 *
 * Exclusive: `Journal.open` takes `<path>.lock` (lock.ts) for the journal's life; a second engine, in
 * this or another process, gets `ERR_JOURNAL_LOCKED`. The journal is opened with O_NOFOLLOW (a
 * symbolic link is refused). Every file system failure is `ERR_JOURNAL_OPEN` with the path, errno
 * and syscall, never a raw fs error.
 *
 * Identity: per region, `identity` records say which memory the losses belong to (the host's boot
 * id, the backing file's dev, inode and birth time). Losses recorded for another identity (after a
 * host reboot, or with the file deleted and created again) are history (`replay.history`): fresh
 * memory is not marked lost.
 */
import * as fs from 'fs';
import * as nodePath from 'path';
import { invalidArg, RasError } from '../errors';
import { identityLine, looksLikeJournal, lostLine, regionLine, resetLine } from './format';
import { JournalLock } from './lock';
import { parseJournal } from './parse';
import {
  copyLayout,
  frameProblem,
  hex,
  layoutDiff,
  layoutProblem,
  resetProblem,
  sameIdentity,
  type JournalReplay,
  type LostFrame,
  type RegionIdentity,
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

const WHAT: Record<string, string> = {
  ENOENT: 'its directory does not exist',
  ELOOP: 'it is a symbolic link (refused: the journal is opened with O_NOFOLLOW)',
  EACCES: 'permission denied',
  EPERM: 'operation not permitted (an immutable or append-only file?)',
  EROFS: 'the file system is read-only',
  ENOSPC: 'no space left on the device',
  EISDIR: 'it is a directory',
  ENOTDIR: 'a component of the path is not a directory',
};

/** A journal error with the path and the fs error's errno, syscall and cause, never a raw fs error. */
function openError(path: string, e: unknown, step = 'open'): Error {
  if (e instanceof RasError) return e;
  const err = e as NodeJS.ErrnoException;
  const why = (err.code && WHAT[err.code]) ?? err.message;
  return new RasError('ERR_JOURNAL_OPEN', `journal ${path}: cannot ${step} it: ${why} (${err.code ?? 'error'}${err.syscall ? `, ${err.syscall}` : ''})`, {
    path,
    errno: err.errno,
    syscall: err.syscall,
    fsCode: err.code,
    cause: e,
  });
}

function journalCall<T>(path: string, step: string, fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    throw openError(path, e, step);
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

/** Read a journal without modifying it or taking its lock (for the CLI). ERR_JOURNAL_OPEN if it cannot be read. */
export function readJournal(path: string): JournalReplay {
  if (typeof path !== 'string' || path.length === 0) throw invalidArg('journal path must be a non-empty string');
  const fd = journalCall(path, 'open', () => fs.openSync(path, fs.constants.O_RDONLY));
  try {
    checkRegularFile(fd, path);
    const buf = journalCall(path, 'read', () => readAll(fd));
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

  private lock: JournalLock | undefined;
  private readonly identities: Map<string, RegionIdentity>;

  private constructor(path: string, fd: number, size: number, regions: Map<string, RegionLayout>, identities: Map<string, RegionIdentity>) {
    this.path = path;
    this.fd = fd;
    this.size = size;
    this.regions = regions;
    this.identities = identities;
  }

  /**
   * Opens (creating it with mode 0600 if missing) and replays the journal. A torn tail is reported in
   * `replay.warnings` and truncated. Throws `ERR_JOURNAL_PERMISSIONS` if an existing journal is accessible
   * by group or others, `ERR_JOURNAL_FORMAT` if the file is not a journal, `ERR_JOURNAL_VERSION` if it was
   * written by a newer format version.
   */
  static open(path: string): { journal: Journal; replay: JournalReplay } {
    if (typeof path !== 'string' || path.length === 0) throw invalidArg('journal path must be a non-empty string');
    const lock = journalCall(path, 'lock', () => JournalLock.acquire(path));
    try {
      const opened = Journal.openLocked(path);
      opened.journal.lock = lock;
      return opened;
    } catch (e) {
      lock.release();
      throw e;
    }
  }

  private static openLocked(path: string): { journal: Journal; replay: JournalReplay } {
    const { O_RDWR, O_APPEND, O_CREAT, O_EXCL, O_NOFOLLOW } = fs.constants;
    let fd: number;
    let created = false;
    try {
      fd = fs.openSync(path, O_RDWR | O_APPEND | O_CREAT | O_EXCL | O_NOFOLLOW, 0o600);
      created = true;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw openError(path, e);
      fd = journalCall(path, 'open', () => fs.openSync(path, O_RDWR | O_APPEND | O_NOFOLLOW));
    }
    try {
      if (created) {
        journalCall(path, 'create', () => {
          fs.fchmodSync(fd, 0o600); // the umask may have removed bits; make it exactly 0600
          fs.fsyncSync(fd);
          fsyncDirectory(nodePath.dirname(nodePath.resolve(path)));
        });
        const replay: JournalReplay = { regions: new Map(), lost: [], warnings: [], records: 0, identities: new Map(), history: [] };
        return { journal: new Journal(path, fd, 0, new Map(), new Map()), replay };
      }
      const st = checkRegularFile(fd, path);
      const uid = process.geteuid?.();
      if (uid !== undefined && st.uid !== uid) {
        throw new RasError(
          'ERR_JOURNAL_PERMISSIONS',
          `journal ${path} belongs to uid ${st.uid}, not to this process (uid ${uid}): it may have been written by ` +
            `someone else; check it, then run: chown ${uid} ${path}`,
          { path, uid: st.uid },
        );
      }
      if ((st.mode & 0o077) !== 0) {
        const mode = (st.mode & 0o777).toString(8).padStart(4, '0');
        throw new RasError(
          'ERR_JOURNAL_PERMISSIONS',
          `journal ${path} has mode ${mode}: it must not be accessible by group or others ` +
            `(it may have been altered); check it, then run: chmod 600 ${path}`,
          { path, mode: st.mode & 0o777 },
        );
      }
      const buf = journalCall(path, 'read', () => readAll(fd));
      checkFormat(buf, path);
      const { replay, tornAt } = parseJournal(buf, path, true);
      let size = buf.length;
      if (tornAt >= 0) {
        journalCall(path, 'truncate', () => {
          fs.ftruncateSync(fd, tornAt);
          fs.fsyncSync(fd);
        });
        size = tornAt;
      }
      const regions = new Map<string, RegionLayout>();
      for (const [k, v] of replay.regions) regions.set(k, copyLayout(v));
      return { journal: new Journal(path, fd, size, regions, new Map(replay.identities)), replay };
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
   * Notes which incarnation of a region's memory is mapped now (this boot, this backing file) and
   * appends it if it is not the one recorded last. Returns the one recorded before, if any: losses
   * recorded for another incarnation are history, not losses of this memory.
   */
  noteIdentity(region: string, id: RegionIdentity): RegionIdentity | undefined {
    this.usable();
    if (!this.regions.has(region)) throw invalidArg(`region "${region}" is not a region known to the journal (checkRegion first)`);
    const old = this.identities.get(region);
    if (old && sameIdentity(old, id)) return old;
    this.append(identityLine(region, id, new Date().toISOString()));
    this.identities.set(region, { ...id });
    return old;
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

  get isClosed(): boolean {
    return this.fd < 0;
  }

  /** Closes the file and releases the lock. Idempotent. */
  close(): void {
    if (this.fd < 0) return;
    const fd = this.fd;
    this.fd = -1;
    try {
      fs.closeSync(fd);
    } finally {
      this.lock?.release();
    }
  }

  private usable(): void {
    if (this.fd < 0) throw new RasError('ERR_JOURNAL_CLOSED', `journal ${this.path} is closed`, { path: this.path });
    if (this.failed) this.reopenAfterFailure();
  }

  /**
   * After a failed fsync the handle's state is unknown: open the same file again (the same inode, else
   * ERR_JOURNAL_FAILED) and go on from what really is there; a record the kernel dropped is written
   * again by the caller's retry (replay ignores a frame recorded twice).
   */
  private reopenAfterFailure(): void {
    const cause = this.failed as Error;
    let fd = -1;
    try {
      fd = fs.openSync(this.path, fs.constants.O_RDWR | fs.constants.O_APPEND | fs.constants.O_NOFOLLOW);
      const now = fs.fstatSync(fd);
      const was = fs.fstatSync(this.fd);
      if (now.dev !== was.dev || now.ino !== was.ino) throw new Error('the file was replaced');
    } catch (e) {
      if (fd >= 0) fs.closeSync(fd);
      throw new RasError(
        'ERR_JOURNAL_FAILED',
        `journal ${this.path}: an earlier fsync failed (${cause.message}) and it cannot be reopened (${(e as Error).message})`,
        { path: this.path, cause },
      );
    }
    fs.closeSync(this.fd);
    this.fd = fd;
    this.failed = undefined;
  }

  /** One write and one fsync; a failure is ERR_JOURNAL_WRITE with the path and the fs error (`cause`, `fsCode`). */
  private append(text: string): void {
    try {
      this.appendRaw(text);
    } catch (e) {
      if (e instanceof RasError) throw e;
      const err = e as NodeJS.ErrnoException;
      const why = (err.code && WHAT[err.code]) ?? err.message;
      throw new RasError('ERR_JOURNAL_WRITE', `journal ${this.path}: cannot write it: ${why} (${err.code ?? 'error'}${err.syscall ? `, ${err.syscall}` : ''})`, {
        path: this.path,
        errno: err.errno,
        syscall: err.syscall,
        fsCode: err.code,
        cause: e,
      });
    }
  }

  private appendRaw(text: string): void {
    const buf = Buffer.from(text, 'utf8');
    // Where this record starts: the file's size now, not a size remembered from an earlier append, so
    // a failed append cuts only its own bytes.
    const start = fs.fstatSync(this.fd).size;
    let off = 0;
    try {
      while (off < buf.length) off += fs.writeSync(this.fd, buf, off, buf.length - off);
    } catch (e) {
      // e.g. ENOSPC after a partial write: cut the partial record so the next append starts on a clean line.
      if (off > 0) {
        try {
          fs.ftruncateSync(this.fd, start);
        } catch {
          this.failed = e as Error;
        }
      }
      throw e;
    }
    try {
      fs.fsyncSync(this.fd);
    } catch (e) {
      // After a failed fsync, Linux may have dropped the dirty pages and cleared the error: the on-disk state
      // is unknown, so this handle is not used again (the next append reopens the file).
      this.failed = e as Error;
      try {
        fs.ftruncateSync(this.fd, start);
      } catch {
        /* keep the original error */
      }
      throw e;
    }
    this.size = start + buf.length;
  }
}
