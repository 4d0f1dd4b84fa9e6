// The journal's lock: one engine (in any process, in any PID namespace of the host) writes a journal
// at a time, for the journal's life.
//
// The lock is the kernel's: an exclusive OFD lock on `<journal>.lock` (native/binding/lock.cc;
// flock(2) on kernels without OFD locks), taken on an open file description of our own. The kernel
// drops it when that description is closed (release(), Journal.close) or its owner dies; it holds
// against every other open file description, so against a second engine of this process, another
// process, and a process in another PID namespace (a container on the same host) alike. Nothing is
// decided from /proc or from pids: the file's content (pid, boot id) is for the error message only.
// release() removes the file while it still holds the lock, and a taker checks after locking that
// the path still names the file it locked (lock.cc), so the removal cannot race; a dead owner's file
// stays, unlocked.
import * as fs from 'node:fs';
import { RasError } from '../errors';
import { native } from '../native';

export interface LockOwner {
  /** The owner's pid, as its own PID namespace numbers it (informative only). */
  pid: number;
  boot: string;
}

let boot: string | undefined;
/** The boot id of this host's current boot (/proc/sys/kernel/random/boot_id). */
export function bootId(): string {
  if (boot === undefined) {
    try {
      boot = fs.readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
    } catch {
      boot = 'unknown';
    }
  }
  return boot;
}

function readOwner(file: string): LockOwner | undefined {
  try {
    const o = JSON.parse(fs.readFileSync(file, 'utf8')) as LockOwner;
    return typeof o.pid === 'number' ? o : undefined;
  } catch {
    return undefined;
  }
}

/** Lock files this process holds (a second engine of the process gets a clear message). */
const held = new Set<string>();

export class JournalLock {
  private constructor(
    readonly file: string,
    private fd: number,
  ) {}

  /** Takes the lock of `journal`; ERR_JOURNAL_LOCKED if an open engine (anywhere on the host) holds it. */
  static acquire(journal: string): JournalLock {
    const file = `${journal}.lock`;
    if (held.has(file)) throw locked(journal, file, { pid: process.pid, boot: bootId() }, 'another engine of this process');
    const fd = native.lockFile(file);
    if (fd < 0) {
      const owner = readOwner(file);
      throw locked(journal, file, owner, owner ? `process ${owner.pid} (as its own PID namespace numbers it)` : 'another process');
    }
    try {
      // For the message a refused opener prints; no fsync: the lock is about running processes.
      fs.ftruncateSync(fd, 0);
      fs.writeSync(fd, JSON.stringify({ pid: process.pid, boot: bootId() }) + '\n', 0);
    } catch {
      /* the lock holds without it */
    }
    held.add(file);
    return new JournalLock(file, fd);
  }

  /** Removes the lock file, then drops the lock (closes its file description). Idempotent. */
  release(): void {
    if (this.fd < 0) return;
    held.delete(this.file);
    try {
      fs.rmSync(this.file, { force: true });
    } catch {
      /* a lock file we cannot remove stays, unlocked */
    }
    native.unlockFile(this.fd);
    this.fd = -1;
  }
}

function locked(journal: string, file: string, owner: LockOwner | undefined, who: string): RasError {
  return new RasError(
    'ERR_JOURNAL_LOCKED',
    `journal ${journal} is in use by ${who} (lock ${file}); one engine writes a journal at a time`,
    { path: journal, lockPath: file, ...(owner ? { ownerPid: owner.pid } : {}) },
  );
}
