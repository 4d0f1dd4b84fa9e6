// Durable: the engine's writes of lost frames to the journal, and what happens when the journal cannot
// be written (full disk, read-only or immutable file, failed fsync). A loss is never held back for the
// journal: it reaches the ledger (marked `durable: false`) and its event whatever the disk does, the
// failure is reported as an `error` event naming the frames and counted, and the frames are written
// again before the next append and on a timer (every RETRY_MS while any wait), until the journal takes
// them; then their ledger entries become `durable: true`.
//
// A batch of native events (dispatch.ts) is one append: between hold() and release() the frames
// recorded wait, and so does every event delivered through deliver(); release() writes them with one
// write and one fsync, then delivers the events in order. Record first, then report: no `lost`,
// `recovered` or `refused` event of the batch reaches a listener before the fsync of its record (or,
// on a full disk, before the failure is known and reported; the loss is reported all the same).
import { RasError } from '../errors';
import type { RasEventMap, RasEvents } from '../events';
import type { Journal } from '../ledger/file';
import type { LostPage } from '../ledger/ledger';
import type { LostFrame, ResetRecord, SplitPageRecord } from '../ledger/records';

/** How often frames the journal refused are written again (besides before every append). */
export const RETRY_MS = 1000;

export interface JournalStats {
  /** Appends of lost frames that failed (each is reported as an `error` event). */
  failedWrites: number;
  /** Lost frames in the ledger that the journal does not hold yet (retried). */
  notDurable: number;
  /** Appends that succeeded after a failure (they carried the frames that had waited). */
  retriedWrites: number;
}

interface Waiting {
  frame: LostFrame;
  page: LostPage;
}

export class DurableLog {
  private readonly waiting: Waiting[] = [];
  /** `split` records (huge pages in private memory with no lost frame to say so) not written yet. */
  private readonly splits: SplitPageRecord[] = [];
  /** Reset records the journal refused (written before everything else that waits). */
  private readonly resets: { rec: ResetRecord; split: boolean }[] = [];
  private failedWrites = 0;
  private retriedWrites = 0;
  private timer: NodeJS.Timeout | undefined;
  /** hold() depth: while > 0, appends wait for release() and so do deliveries. */
  private held = 0;
  /** The frames appended while held (reported by name if their append fails). */
  private heldFresh: Waiting[] = [];
  private heldEvents: (() => void)[] = [];
  private heldTime: string | undefined;

  constructor(
    private readonly journal: Journal | undefined,
    private readonly events: RasEvents,
  ) {}

  /**
   * Writes the frames (after any that wait) and marks their pages durable; on failure the pages are
   * marked not durable, the failure is reported and the frames wait for a retry. Never throws.
   */
  append(frames: LostFrame[], pages: LostPage[], split: SplitPageRecord[] = []): void {
    if (!this.journal) return;
    this.splits.push(...split);
    const items = frames.map((frame, i) => ({ frame, page: pages[i] }));
    for (const it of items) it.page.durable = false;
    this.waiting.push(...items);
    if (this.held > 0) this.heldFresh.push(...items);
    else this.flush(items);
  }

  /** Frames appended from now on wait for release(): one append for all of them. Nests. */
  hold(): void {
    this.held++;
  }

  /**
   * The last release() of a hold: the frames appended since are written (one write, one fsync), then
   * the events delivered since are delivered, in order, whatever the disk did. Never throws.
   */
  release(): void {
    if (this.held === 0 || --this.held > 0) return;
    const fresh = this.heldFresh;
    const events = this.heldEvents;
    this.heldFresh = [];
    this.heldEvents = [];
    this.heldTime = undefined;
    if (fresh.length > 0 || this.splits.length > 0) this.flush(fresh);
    for (const fn of events) fn(); // RasEvents.deliver never throws
  }

  /** Delivers an event now, or, held, once the losses recorded before it are written (release()). */
  deliver<K extends keyof RasEventMap>(name: K, e: RasEventMap[K]): void {
    if (this.held > 0) this.heldEvents.push(() => this.events.deliver(name, e));
    else this.events.deliver(name, e);
  }

  /** When a loss is recorded: the same time for every frame of a held batch (one journal line for them). */
  wallTime(): string {
    if (this.held === 0) return new Date().toISOString();
    return (this.heldTime ??= new Date().toISOString());
  }

  /** Frames inside [offset, offset+size) of a region no longer wait (a reset cleared them). */
  dropRange(region: string, offset: number, size: number): void {
    for (let i = this.waiting.length - 1; i >= 0; i--) {
      const f = this.waiting[i].frame;
      if (f.region === region && f.offset >= offset && f.offset + f.size <= offset + size) this.waiting.splice(i, 1);
    }
    for (let i = this.splits.length - 1; i >= 0; i--) {
      const p = this.splits[i];
      if (p.region === region && p.offset >= offset && p.offset + p.size <= offset + size) this.splits.splice(i, 1);
    }
    if (this.waiting.length === 0 && this.splits.length === 0) this.stopTimer();
  }

  /**
   * Journals a reset (with a `split` line when the page is on private memory now). If the journal
   * refuses it, the failure is reported and the reset waits and is retried like a lost frame: without
   * it a restart would find the fresh memory lost. Never throws.
   */
  reset(rec: ResetRecord, split: boolean, hugePageIndex: number): void {
    if (!this.journal) return;
    this.resets.push({ rec, split });
    if (this.flush([], false)) return;
    const path = this.journal.path;
    this.events.reportError(
      new RasError(
        'ERR_JOURNAL_WRITE',
        `journal ${path}: could not record the reset of region ${rec.region} huge page ${hugePageIndex} (guest physical 0x${rec.guestPhysAddr.toString(16)}); it is retried`,
        { path, region: rec.region, hugePageIndex, guestPhysAddr: rec.guestPhysAddr },
      ),
    );
  }

  stats(): JournalStats {
    return { failedWrites: this.failedWrites, notDurable: this.waiting.length + this.splits.length + this.resets.length, retriedWrites: this.retriedWrites };
  }

  /** Writes the frames that wait now; true when none wait any more (a handover needs them durable). */
  flushNow(): boolean {
    return this.flush([], false);
  }

  /** A last attempt, then no more retries. */
  close(): void {
    if (this.waiting.length > 0 || this.splits.length > 0 || this.resets.length > 0) this.flush([]);
    this.stopTimer();
  }

  /**
   * Writes every waiting frame in one append. `fresh`: the frames of this call, reported if the write
   * fails; a retry by the timer (no fresh frames) that fails again is counted, not reported again.
   */
  private flush(fresh: Waiting[], report = true): boolean {
    const journal = this.journal;
    if (!journal || (this.waiting.length === 0 && this.splits.length === 0 && this.resets.length === 0)) return true;
    const batch = [...this.waiting];
    const splits = [...this.splits];
    const resets = [...this.resets];
    const hadWaited = batch.length > fresh.length;
    try {
      journal.appendLost(
        batch.map((w) => w.frame),
        splits,
        resets,
      );
    } catch (err) {
      this.failedWrites++;
      if (report) this.report(journal.path, (fresh.length > 0 ? fresh : batch).map((w) => w.frame), batch.length, err);
      this.startTimer();
      return false;
    }
    if (hadWaited) this.retriedWrites++;
    for (const w of batch) w.page.durable = true;
    this.waiting.splice(0, batch.length);
    this.splits.splice(0, splits.length);
    this.resets.splice(0, resets.length);
    this.stopTimer();
    return true;
  }

  private report(path: string, frames: LostFrame[], waiting: number, err: unknown): void {
    const list = frames.map((f) => `${f.region}+0x${f.offset.toString(16)} (guest physical 0x${f.guestPhysAddr.toString(16)}, ${f.size} bytes)`);
    // The journal's own ERR_JOURNAL_WRITE carries the fs error as its cause.
    const fsErr = (err instanceof RasError && (err as { cause?: unknown }).cause ? (err as { cause?: unknown }).cause : err) as NodeJS.ErrnoException;
    const why = fsErr instanceof Error ? fsErr.message : String(fsErr);
    this.events.reportError(
      new RasError(
        'ERR_JOURNAL_WRITE',
        `journal ${path}: could not record ${frames.length} lost frame(s) ${list.join(', ')}: ${why}; ` +
          `they are in lostPages() with durable: false and were reported; the write is retried`,
        {
          path,
          frames: frames.map((f) => ({ region: f.region, offset: f.offset, guestPhysAddr: f.guestPhysAddr, size: f.size })),
          waiting,
          cause: fsErr,
          ...(fsErr && typeof fsErr === 'object' && 'errno' in fsErr ? { fsCode: fsErr.code, errno: fsErr.errno, syscall: fsErr.syscall } : {}),
        },
      ),
    );
  }

  private startTimer(): void {
    if (this.timer) return;
    this.timer = setInterval(() => {
      if (!this.journal || this.journal.isClosed) return this.stopTimer();
      this.flush([], false);
    }, RETRY_MS);
    this.timer.unref();
  }

  private stopTimer(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }
}
