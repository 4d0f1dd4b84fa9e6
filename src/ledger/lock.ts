// The journal's lock: one engine (in any process) writes a journal at a time, for the journal's life.
//
// Node has no flock(2), so the lock is a file next to the journal, `<journal>.lock`, created
// atomically (written to a temporary name, then link(2)ed into place, which fails if the lock
// exists) with the owner's pid, its start time (/proc/<pid>/stat) and the boot id. A lock is stale
// (its owner cannot be running) when it is from another boot, when its pid is gone, or when that pid
// is now another process (a different start time: a restarted container's VMM often gets the same
// pid); a stale lock is replaced. Within one process the lock file names this process, so a second
// engine of the process is refused too. The lock is removed by `release()` (Journal.close); a crashed
// owner leaves it, and the next opener finds it stale.
import * as fs from 'node:fs';
import { RasError } from '../errors';

export interface LockOwner {
  pid: number;
  /** /proc/<pid>/stat starttime (clock ticks after boot): tells a reused pid apart. */
  start: string;
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

function startTime(pid: number): string | undefined {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    // comm may contain spaces and parentheses: fields are counted after the last ')'.
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
  } catch {
    return undefined;
  }
}

function self(): LockOwner {
  return { pid: process.pid, start: startTime(process.pid) ?? '?', boot: bootId() };
}

function readOwner(file: string): LockOwner | undefined {
  try {
    const o = JSON.parse(fs.readFileSync(file, 'utf8')) as LockOwner;
    return typeof o.pid === 'number' && typeof o.start === 'string' && typeof o.boot === 'string' ? o : undefined;
  } catch {
    return undefined;
  }
}

/** Why the owner cannot be running, or undefined if it may be. */
function staleBecause(o: LockOwner | undefined): string | undefined {
  if (!o) return 'the lock file is unreadable';
  if (o.boot !== bootId()) return `its owner ran in an earlier boot (${o.boot})`;
  const now = startTime(o.pid);
  if (now === undefined) return `its owner (pid ${o.pid}) is not running`;
  if (now !== o.start) return `pid ${o.pid} is now another process`;
  return undefined;
}

/** Lock files this process holds (a second engine of the process is refused without a file race). */
const held = new Set<string>();

export class JournalLock {
  private constructor(
    readonly file: string,
    private readonly content: string,
  ) {}

  /** Takes the lock of `journal`; ERR_JOURNAL_LOCKED if a running engine holds it. */
  static acquire(journal: string): JournalLock {
    const file = `${journal}.lock`;
    const me = self();
    const content = JSON.stringify(me) + '\n';
    for (let attempt = 0; attempt < 3; attempt++) {
      if (held.has(file)) throw locked(journal, file, me, 'another engine of this process');
      const tmp = `${file}.${process.pid}.${attempt}.tmp`;
      try {
        const fd = fs.openSync(tmp, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW, 0o600);
        try {
          // No fsync: the lock is about running processes; after a crash of the host the boot id differs.
          fs.writeSync(fd, content);
        } finally {
          fs.closeSync(fd);
        }
        try {
          fs.linkSync(tmp, file);
          held.add(file);
          return new JournalLock(file, content);
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
        }
      } finally {
        fs.rmSync(tmp, { force: true });
      }
      const owner = readOwner(file);
      const why = staleBecause(owner);
      if (why === undefined) throw locked(journal, file, owner!, owner!.pid === process.pid ? 'another engine of this process' : `process ${owner!.pid}`);
      // Stale: remove it unless it changed meanwhile (another opener replaced it first).
      try {
        if (!owner || fs.readFileSync(file, 'utf8') === JSON.stringify(owner) + '\n') fs.rmSync(file, { force: true });
      } catch {
        /* gone meanwhile: try again */
      }
    }
    throw locked(journal, file, readOwner(file) ?? me, 'a competing opener');
  }

  /** Removes the lock if it is still this process's. Idempotent. */
  release(): void {
    if (!held.delete(this.file)) return;
    try {
      if (fs.readFileSync(this.file, 'utf8') === this.content) fs.rmSync(this.file, { force: true });
    } catch {
      /* already gone */
    }
  }
}

function locked(journal: string, file: string, owner: LockOwner, who: string): RasError {
  return new RasError(
    'ERR_JOURNAL_LOCKED',
    `journal ${journal} is in use by ${who} (lock ${file}, pid ${owner.pid}); one engine writes a journal at a time`,
    { path: journal, lockPath: file, ownerPid: owner.pid },
  );
}
