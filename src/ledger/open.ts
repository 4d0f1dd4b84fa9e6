/**
 * Opening a journal file: every fs failure as `ERR_JOURNAL_OPEN` (never a raw fs error), the
 * regular-file, format, owner and mode checks, creation (mode 0600, fsync of the directory), the
 * torn-tail truncation, and the read-only `readJournal` for the CLI. The write path is in write.ts,
 * the `Journal` class that ties them together in file.ts.
 */
import * as fs from 'fs';
import * as nodePath from 'path';
import { invalidArg, RasError } from '../errors';
import { looksLikeJournal } from './format';
import { parseJournal } from './parse';
import { copyLayout, type JournalReplay, type RegionIdentity, type RegionLayout } from './records';

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

/** Why an fs call failed, by its code, in words. */
export const WHAT: Record<string, string> = {
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
  if (e instanceof RasError && e.code.startsWith('ERR_')) return e;
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

export function journalCall<T>(path: string, step: string, fn: () => T): T {
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

/** What `Journal` is made of: the open fd, the file's size and the layouts and identities replayed. */
export interface OpenedJournalFile {
  fd: number;
  size: number;
  regions: Map<string, RegionLayout>;
  identities: Map<string, RegionIdentity>;
  replay: JournalReplay;
}

/** An existing journal another user owns, or one that grants any permission to group or others, is refused. */
function checkOwnerAndMode(st: fs.Stats, path: string): void {
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
}

/**
 * Opens (creating it with mode 0600 if missing) and replays the journal at `path`, whose lock the
 * caller holds; truncates a torn tail. The fd is closed again if anything fails.
 */
export function openJournalFile(path: string): OpenedJournalFile {
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
      const replay: JournalReplay = { regions: new Map(), lost: [], warnings: [], records: 0, identities: new Map(), history: [], handedOver: [], split: [] };
      return { fd, size: 0, regions: new Map(), identities: new Map(), replay };
    }
    const st = checkRegularFile(fd, path);
    checkOwnerAndMode(st, path);
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
    return { fd, size, regions, identities: new Map(replay.identities), replay };
  } catch (e) {
    try {
      fs.closeSync(fd);
    } catch {
      /* keep the original error */
    }
    throw e;
  }
}
