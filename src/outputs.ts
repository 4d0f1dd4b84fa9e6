// What the engine shows operators besides its events, each asked for by an option of RasEngine.open:
// metrics for node_exporter's textfile collector, a QMP-shaped event log, a status socket. Checked
// with the other options (nothing opens on bad input); closed with the engine.
import type { RasEngine } from './engine';
import { checkEventLogTarget, EventLog, type EventLogTarget } from './eventlog/index';
import { checkTextfileOptions, type TextfileOptions } from './metrics/options';
import { TextfileWriter } from './metrics/textfile';
import { checkStatusSocket, StatusServer } from './status/server';

export interface OutputOptions {
  /** Keep DIR/hugetlb-ras-NAME.prom current for node_exporter's textfile collector. */
  metrics?: TextfileOptions;
  /** QMP-shaped MEMORY_FAILURE events as NDJSON: a file path (appended) or a writable stream. */
  eventLog?: EventLogTarget;
  /** A unix socket answering `hugetlb-ras status --socket PATH`. */
  statusSocket?: string;
}


export function checkOutputOptions(o: OutputOptions): void {
  if (o.metrics !== undefined) checkTextfileOptions(o.metrics);
  if (o.eventLog !== undefined) checkEventLogTarget(o.eventLog);
  if (o.statusSocket !== undefined) checkStatusSocket(o.statusSocket);
}

export interface Outputs {
  readonly textfile?: TextfileWriter;
  readonly eventLog?: EventLog;
  readonly statusServer?: StatusServer;
  close(): void;
}

/** Opens what the options ask for; on a failure closes what it opened and throws. */
export function openOutputs(engine: RasEngine, o: OutputOptions): Outputs {
  const opened: { close(): void }[] = [];
  const out: { -readonly [K in keyof Outputs]: Outputs[K] } = {
    close() {
      for (const x of opened.splice(0).reverse()) x.close();
    },
  };
  try {
    if (o.eventLog !== undefined) opened.push((out.eventLog = new EventLog(engine, o.eventLog)));
    if (o.metrics !== undefined) opened.push((out.textfile = new TextfileWriter(engine, checkTextfileOptions(o.metrics))));
    if (o.statusSocket !== undefined) opened.push((out.statusServer = new StatusServer(engine, o.statusSocket)));
  } catch (err) {
    out.close();
    throw err;
  }
  return out;
}
