// The engine's `eventLog` option: QMP-shaped MEMORY_FAILURE events (qmp.ts) as NDJSON, one object per
// line, to a file (appended, each line written whole with one write) or to a stream the VMM names (a
// socket, a pipe, process.stdout). A write that fails is reported as an `error` event, never thrown.
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Writable } from 'node:stream';
import type { RasEngine } from '../engine';
import { invalidArg, RasError } from '../errors';
import { trackOutcomes, type OutcomeTracker } from '../metrics/outcomes';
import { toQmp } from './qmp';

export { QMP_ACTIONS, QMP_RECIPIENTS, EXTENSION_KEY, toQmp, type QmpMemoryFailure, type QmpExtension } from './qmp';

export type EventLogTarget = string | Writable;

export function checkEventLogTarget(t: unknown): EventLogTarget {
  if (typeof t === 'string') {
    if (t.length === 0 || t.includes('\0')) throw invalidArg('eventLog must be a file path or a writable stream');
    // Checked before the engine opens; the file itself is opened (created) after the other checks.
    let dir: fs.Stats | undefined;
    try {
      dir = fs.statSync(path.dirname(path.resolve(t)));
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      throw new RasError(e.code ?? 'EUNKNOWN', `eventLog ${t}: ${e.message}`, { errno: e.errno, syscall: e.syscall, path: t });
    }
    if (!dir.isDirectory()) throw invalidArg(`eventLog ${t}: ${path.dirname(t)} is not a directory`);
    return t;
  }
  if (typeof t === 'object' && t !== null && typeof (t as Writable).write === 'function') return t as Writable;
  throw invalidArg('eventLog must be a file path or a writable stream');
}

export class EventLog {
  private readonly fd: number | undefined;
  private readonly stream: Writable | undefined;
  private readonly tracker: OutcomeTracker;
  private closed = false;

  /** Opens the file (created 0640, appended) before the engine opens: a bad path throws here. */
  constructor(
    private readonly engine: RasEngine,
    target: EventLogTarget,
  ) {
    if (typeof target === 'string') {
      try {
        this.fd = fs.openSync(target, 'a', 0o640);
      } catch (err) {
        const e = err as NodeJS.ErrnoException;
        throw new RasError(e.code ?? 'EUNKNOWN', `eventLog ${target}: ${e.message}`, { errno: e.errno, syscall: e.syscall, path: target });
      }
    } else {
      this.stream = target;
      // A stream that fails (a socket whose reader went away) must not crash the VMM: reported.
      target.on('error', this.onStreamError);
    }
    this.tracker = trackOutcomes(engine, (r) => {
      for (const ev of toQmp(r)) this.write(JSON.stringify(ev) + '\n');
    });
  }

  private readonly onStreamError = (err: NodeJS.ErrnoException): void => {
    this.engine.reportError(new RasError(err.code ?? 'EUNKNOWN', `eventLog: the stream failed: ${err.message}`, { errno: err.errno, syscall: err.syscall, cause: err }));
  };

  private write(line: string): void {
    if (this.closed) return;
    try {
      if (this.fd !== undefined) fs.writeSync(this.fd, line);
      else this.stream!.write(line);
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      this.engine.reportError(new RasError(e.code ?? 'EUNKNOWN', `eventLog: cannot write: ${e.message}`, { errno: e.errno, syscall: e.syscall, cause: err }));
    }
  }

  /** Stops writing; closes the file it opened (a stream the VMM passed stays open: it is the VMM's). */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.tracker.dispose();
    if (this.fd !== undefined) fs.closeSync(this.fd);
    this.stream?.off('error', this.onStreamError);
  }
}
