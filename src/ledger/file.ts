/**
 * Durable journal of lost guest frames: the file (open, append, fsync, torn-tail recovery). Opening and
 * its checks are in open.ts, the write path in write.ts; `Journal` here ties them to the records.
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
import { invalidArg, RasError } from '../errors';
import { handoverAbortLine, handoverLines, identityLine, lostLines, regionLine, resetLine, resplitLine, splitLine } from './format';
import { handoverRecordProblem, type ResplitRecord } from './handover';
import { JournalLock } from './lock';
import { journalCall, openJournalFile } from './open';
import {
  copyLayout,
  frameProblem,
  hex,
  layoutDiff,
  layoutProblem,
  resetProblem,
  sameIdentity,
  type HandoverPageRecord,
  type JournalReplay,
  type LostFrame,
  type RegionIdentity,
  type RegionLayout,
  type ResetRecord,
  type SplitPageRecord,
} from './records';
import { appendDurably, reopenSameFile, writeError } from './write';

export { readJournal } from './open';

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
    const { fd, size, regions, identities, replay } = openJournalFile(path);
    return { journal: new Journal(path, fd, size, regions, identities), replay };
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
   * Appends lost frames with one write and one fsync (the frames that share region, size, cause,
   * reason and time in one `lost-frames` line, format.ts). Every frame must belong to a region
   * passed to `checkRegion` (or replayed), lie inside it, and have
   * `guestPhysAddr === region.guestPhysAddr + offset`. Nothing is written if any frame is invalid.
   */
  appendLost(frames: LostFrame[], split: SplitPageRecord[] = [], resets: { rec: ResetRecord; split: boolean }[] = []): void {
    if (!Array.isArray(frames) || !Array.isArray(split)) throw invalidArg('frames must be an array');
    const resetText = resets.map((r) => this.resetText(r.rec, r.split)).join('');
    split.forEach((p, i) => this.checkHugePage(p, `split[${i}]`, undefined));
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
    if (frames.length === 0 && split.length === 0 && resets.length === 0) return;
    // Resets first: a frame or split waiting now was recorded after them (older ones in their range were dropped).
    const base = (region: string): bigint => (this.regions.get(region) as RegionLayout).guestPhysAddr;
    this.append(resetText + lostLines(frames, base) + split.map(splitLine).join(''));
  }

  /**
   * Appends a reset: it clears the lost frames of that region lying inside [guestPhysAddr, guestPhysAddr+size).
   * `split`: the reset's huge page is on private (anonymous) memory, not the file's: a `split` line
   * follows in the same write (format version 3).
   */
  appendReset(rec: ResetRecord, split = false): void {
    const text = this.resetText(rec, split);
    this.usable();
    this.append(text);
  }

  /** A reset's line (and its split line), checked. */
  private resetText(rec: ResetRecord, split: boolean): string {
    const p = resetProblem(rec, 'reset');
    if (p) throw invalidArg(p);
    if (!this.regions.has(rec.region)) {
      throw invalidArg(`reset.region "${rec.region}" is not a region known to the journal (checkRegion first)`);
    }
    const layout = this.regions.get(rec.region);
    const splitRec =
      split && layout ? { region: rec.region, guestPhysAddr: rec.guestPhysAddr, offset: Number(rec.guestPhysAddr - layout.guestPhysAddr), size: rec.size, wallTime: rec.wallTime } : undefined;
    if (splitRec) this.checkHugePage(splitRec, 'reset', undefined);
    return resetLine(rec) + (splitRec ? splitLine(splitRec) : '');
  }

  /**
   * Appends a handover (ledger/handover.ts): one `handover` line per huge page and the `handover-done`
   * line, with one write and one fsync. Each page must be a whole huge page of a known region.
   */
  appendHandover(id: string, pages: Omit<HandoverPageRecord, 'id' | 'wallTime'>[]): void {
    if (typeof id !== 'string' || id.length === 0) throw invalidArg('handover id must be a non-empty string');
    const wallTime = new Date().toISOString();
    const full = pages.map((p) => ({ ...p, id, wallTime }));
    full.forEach((p, i) => this.checkHugePage(p, `pages[${i}]`, handoverRecordProblem(p, `pages[${i}]`)));
    this.usable();
    this.append(handoverLines(full, id, wallTime));
  }

  /** Appends a `handover-abort`: the handover `id` is void (the old process runs the guest again). */
  appendHandoverAbort(id: string): void {
    if (typeof id !== 'string' || id.length === 0) throw invalidArg('handover id must be a non-empty string');
    this.usable();
    this.append(handoverAbortLine(id, new Date().toISOString()));
  }

  /** Appends `resplit` lines (one write, one fsync): those huge pages are private memory again. */
  appendResplit(pages: ResplitRecord[]): void {
    pages.forEach((p, i) => this.checkHugePage(p, `pages[${i}]`, undefined));
    this.usable();
    if (pages.length > 0) this.append(pages.map(resplitLine).join(''));
  }

  private checkHugePage(p: { region: string; offset: number; size: number; guestPhysAddr: bigint }, what: string, problem: string | undefined): void {
    if (problem) throw invalidArg(problem);
    const layout = this.regions.get(p.region);
    if (!layout) throw invalidArg(`${what}.region "${p.region}" is not a region known to the journal (checkRegion first)`);
    if (p.size !== layout.hugePageSize || p.offset % layout.hugePageSize !== 0 || p.offset + p.size > layout.size)
      throw invalidArg(`${what} [offset ${p.offset}, size ${p.size}] is not a huge page of region "${p.region}"`);
    if (p.guestPhysAddr !== layout.guestPhysAddr + BigInt(p.offset))
      throw invalidArg(`${what}.guestPhysAddr ${hex(p.guestPhysAddr)} does not match region "${p.region}" + offset 0x${p.offset.toString(16)}`);
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

  /** After a failed fsync: the same file, opened again (write.ts), or ERR_JOURNAL_FAILED. */
  private reopenAfterFailure(): void {
    this.fd = reopenSameFile(this.path, this.fd, this.failed as Error);
    this.failed = undefined;
  }

  /** One write and one fsync; a failure is ERR_JOURNAL_WRITE with the path and the fs error (`cause`, `fsCode`). */
  private append(text: string): void {
    try {
      this.size = appendDurably(this.fd, text, (e) => {
        this.failed = e;
      });
    } catch (e) {
      throw writeError(this.path, e);
    }
  }
}
