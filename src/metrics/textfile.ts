// The engine's `metrics: { textfileDir, name }` option: the metrics of registerMetrics in their own
// registry, written to DIR/hugetlb-ras-NAME.prom for node_exporter's textfile collector. Written whole
// to a temporary file in DIR and renamed over (the collector never reads half a file; it ignores
// names not ending in .prom), after every change and at least every REFRESH_MS, removed on close().
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { RasEngine } from '../engine';
import { RasError } from '../errors';
import { promClient, registerMetrics, type RasMetrics } from './index';
import type { TextfileOptions } from './options';

export { checkTextfileOptions, type TextfileOptions } from './options';

export const REFRESH_MS = 15_000;

export class TextfileWriter {
  readonly file: string;
  private readonly tmp: string;
  private readonly metrics: RasMetrics;
  private readonly timer: NodeJS.Timeout;
  private pending = false;
  private writing: Promise<void> | undefined;
  private closed = false;

  constructor(
    private readonly engine: RasEngine,
    options: TextfileOptions,
  ) {
    this.file = path.join(options.textfileDir, `hugetlb-ras-${options.name}.prom`);
    this.tmp = path.join(options.textfileDir, `.hugetlb-ras-${options.name}.prom.${process.pid}.tmp`);
    this.metrics = registerMetrics(engine, { registry: new (promClient().Registry)() });
    this.metrics.onChange = () => this.schedule();
    this.timer = setInterval(() => this.schedule(), REFRESH_MS).unref();
    this.schedule();
  }

  /** A write soon (coalesced: one per turn of the event loop). */
  schedule(): void {
    if (this.closed || this.pending) return;
    this.pending = true;
    setImmediate(() => {
      this.pending = false;
      this.writing = this.write();
    });
  }

  /** Resolves when the file holds the metrics as they are now. */
  async flush(): Promise<void> {
    await this.writing;
    await this.write();
  }

  private async write(): Promise<void> {
    if (this.closed || this.engine.isClosed) return;
    try {
      const text = await this.metrics.registry.metrics();
      if (this.closed) return;
      fs.writeFileSync(this.tmp, text, { mode: 0o644 });
      fs.renameSync(this.tmp, this.file);
    } catch (err) {
      fs.rmSync(this.tmp, { force: true });
      const e = err as NodeJS.ErrnoException;
      this.engine.reportError(new RasError(e.code ?? 'EUNKNOWN', `metrics: cannot write ${this.file}: ${e.message}`, { errno: e.errno, syscall: e.syscall, path: this.file, cause: err }));
    }
  }

  /** Stops writing and removes the file (node_exporter then stops exporting the series). */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.timer);
    this.metrics.unregister();
    fs.rmSync(this.tmp, { force: true });
    fs.rmSync(this.file, { force: true });
  }
}
