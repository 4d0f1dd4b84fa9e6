/**
 * The journal's write path: every append is one write(2) of all its lines and one fsync(2); a
 * partial record is cut away; after a failed fsync the handle is not trusted again and the same file
 * is reopened. Every failure is `ERR_JOURNAL_WRITE` (or `ERR_JOURNAL_FAILED`), never a raw fs error.
 */
import * as fs from 'fs';
import { RasError } from '../errors';
import { WHAT } from './open';

/** A failed append as ERR_JOURNAL_WRITE with the path and the fs error (`cause`, `fsCode`); a RasError as it is. */
export function writeError(path: string, e: unknown): Error {
  if (e instanceof RasError) return e;
  const err = e as NodeJS.ErrnoException;
  const why = (err.code && WHAT[err.code]) ?? err.message;
  return new RasError('ERR_JOURNAL_WRITE', `journal ${path}: cannot write it: ${why} (${err.code ?? 'error'}${err.syscall ? `, ${err.syscall}` : ''})`, {
    path,
    errno: err.errno,
    syscall: err.syscall,
    fsCode: err.code,
    cause: e,
  });
}

/**
 * Appends text to fd with one write and one fsync and returns the file's size after it. `failed` is
 * called (before the error is thrown) when the handle's state is unknown and it must not be used again.
 */
export function appendDurably(fd: number, text: string, failed: (e: Error) => void): number {
  const buf = Buffer.from(text, 'utf8');
  // Where this record starts: the file's size now, not a size remembered from an earlier append, so
  // a failed append cuts only its own bytes.
  const start = fs.fstatSync(fd).size;
  let off = 0;
  try {
    while (off < buf.length) off += fs.writeSync(fd, buf, off, buf.length - off);
  } catch (e) {
    // e.g. ENOSPC after a partial write: cut the partial record so the next append starts on a clean line.
    if (off > 0) {
      try {
        fs.ftruncateSync(fd, start);
      } catch {
        failed(e as Error);
      }
    }
    throw e;
  }
  try {
    fs.fsyncSync(fd);
  } catch (e) {
    // After a failed fsync, Linux may have dropped the dirty pages and cleared the error: the on-disk state
    // is unknown, so this handle is not used again (the next append reopens the file).
    failed(e as Error);
    try {
      fs.ftruncateSync(fd, start);
    } catch {
      /* keep the original error */
    }
    throw e;
  }
  return start + buf.length;
}

/**
 * After a failed fsync the handle's state is unknown: opens the same file again (the same inode, else
 * ERR_JOURNAL_FAILED), closes the old fd and returns the new one; a record the kernel dropped is written
 * again by the caller's retry (replay ignores a frame recorded twice).
 */
export function reopenSameFile(path: string, oldFd: number, cause: Error): number {
  let fd = -1;
  try {
    fd = fs.openSync(path, fs.constants.O_RDWR | fs.constants.O_APPEND | fs.constants.O_NOFOLLOW);
    const now = fs.fstatSync(fd);
    const was = fs.fstatSync(oldFd);
    if (now.dev !== was.dev || now.ino !== was.ino) throw new Error('the file was replaced');
  } catch (e) {
    if (fd >= 0) fs.closeSync(fd);
    throw new RasError(
      'ERR_JOURNAL_FAILED',
      `journal ${path}: an earlier fsync failed (${cause.message}) and it cannot be reopened (${(e as Error).message})`,
      { path, cause },
    );
  }
  fs.closeSync(oldFd);
  return fd;
}
