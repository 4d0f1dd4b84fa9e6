// Idle: whenIdle() resolves when every captured report has been handled and its events delivered. It
// is resolved from the dispatch callback (the native worker's batch), from deferred deliveries (replayed
// losses) and, for what comes without an event (a paused engine, reports handled without events), by a
// slow fallback timer; never by polling every millisecond.
import { RasError } from '../errors';
import { native } from '../native';

/** The fallback check while a waiter waits (a paused engine; reports that end without an event). */
export const IDLE_FALLBACK_MS = 50;

interface Waiter {
  resolve(): void;
  reject(err: Error): void;
  deadline: NodeJS.Timeout | undefined;
}

export class Idle {
  private readonly waiters = new Set<Waiter>();
  private deferred = 0;
  private fallback: NodeJS.Timeout | undefined;

  /** Runs fn after the current call returns (setImmediate); whenIdle() waits for it. */
  defer(fn: () => void): void {
    this.deferred++;
    setImmediate(() => {
      try {
        fn();
      } finally {
        this.deferred--;
        this.check(0);
      }
    });
  }

  /** inFlight: events being delivered right now (counted as delivered when the callback returns). */
  isIdle(inFlight = 0): boolean {
    if (this.deferred > 0) return false;
    const c = native.counters();
    return c.processed >= c.captured && c.delivered + inFlight >= c.posted;
  }

  /** Resolves the waiters if the engine is idle once `inFlight` events are delivered. */
  check(inFlight: number): void {
    if (this.waiters.size === 0 || !this.isIdle(inFlight)) return;
    for (const w of [...this.waiters]) this.settle(w);
  }

  wait(timeoutMs: number | undefined): Promise<void> {
    if (this.isIdle()) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      const w: Waiter = { resolve, reject, deadline: undefined };
      if (timeoutMs !== undefined)
        w.deadline = setTimeout(() => {
          const c = native.counters();
          this.settle(w, new RasError('ERR_TIMEOUT', c.paused ? 'the engine is paused: reports wait for resume()' : 'reports still being handled', { timeoutMs }));
        }, timeoutMs);
      this.waiters.add(w);
      if (!this.fallback) this.fallback = setInterval(() => this.check(0), IDLE_FALLBACK_MS);
    });
  }

  /** The engine closed: nothing more will come. */
  closeAll(): void {
    for (const w of [...this.waiters]) this.settle(w);
  }

  private settle(w: Waiter, err?: Error): void {
    if (!this.waiters.delete(w)) return;
    if (w.deadline) clearTimeout(w.deadline);
    if (this.waiters.size === 0 && this.fallback) {
      clearInterval(this.fallback);
      this.fallback = undefined;
    }
    if (err) w.reject(err);
    else w.resolve();
  }
}
