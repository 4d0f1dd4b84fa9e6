// The engine's `statusSocket` option: a unix socket that answers every connection with the engine's
// status (report.ts) as one line of JSON, then closes. Read by `hugetlb-ras status --socket PATH`.
// The socket is the engine's: a socket left at the path by a process that died is replaced; anything
// else there is refused. Mode 0600 (the owner: the VMM's user, or root). Removed on close().
import * as fs from 'node:fs';
import * as net from 'node:net';
import type { RasEngine } from '../engine';
import { invalidArg, RasError } from '../errors';
import { engineStatus } from './report';

export function checkStatusSocket(p: unknown): string {
  if (typeof p !== 'string' || p.length === 0 || p.includes('\0')) throw invalidArg('statusSocket must be a path');
  if (Buffer.byteLength(p) > 107) throw invalidArg(`statusSocket ${p} is longer than a unix socket path may be (107 bytes)`);
  let st: fs.Stats | undefined;
  try {
    st = fs.lstatSync(p);
  } catch {
    /* free */
  }
  if (st && !st.isSocket()) throw invalidArg(`statusSocket ${p} exists and is not a socket`);
  return p;
}

export class StatusServer {
  private readonly server: net.Server;
  private ino: number | undefined;
  private closed = false;
  private readonly ready: Promise<void>;

  constructor(
    engine: RasEngine,
    private readonly path: string,
  ) {
    fs.rmSync(path, { force: true }); // a socket (checkStatusSocket): a dead process's
    this.server = net.createServer((conn) => {
      conn.on('error', () => conn.destroy());
      let text: string;
      try {
        text = JSON.stringify(engineStatus(engine)) + '\n';
      } catch (err) {
        text = JSON.stringify({ error: (err as Error).message, code: (err as RasError).code }) + '\n';
      }
      conn.end(text);
    });
    this.server.on('error', (err: NodeJS.ErrnoException) =>
      engine.reportError(new RasError(err.code ?? 'EUNKNOWN', `statusSocket ${path}: ${err.message}`, { errno: err.errno, syscall: err.syscall, path, cause: err })),
    );
    this.ready = new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(path, () => {
        try {
          fs.chmodSync(path, 0o600);
          this.ino = fs.statSync(path).ino;
        } catch {
          /* gone already */
        }
        if (this.closed) this.removeFile();
        resolve();
      });
    });
    this.ready.catch(() => {}); // reported by the error listener above
    this.server.unref();
  }

  /** Resolves when the socket accepts connections. */
  listening(): Promise<void> {
    return this.ready;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.server.close();
    this.removeFile();
  }

  private removeFile(): void {
    try {
      if (this.ino !== undefined && fs.statSync(this.path).ino === this.ino) fs.rmSync(this.path, { force: true });
    } catch {
      /* gone already */
    }
  }
}

/** Asks an engine's status socket (the CLI): the report, or a RasError with the socket's errno. */
export function queryStatusSocket(path: string, timeoutMs = 5000): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const conn = net.createConnection(path);
    let data = '';
    const timer = setTimeout(() => {
      conn.destroy();
      reject(new RasError('ERR_TIMEOUT', `no answer on ${path} within ${timeoutMs} ms`));
    }, timeoutMs);
    conn.setEncoding('utf8');
    conn.on('data', (d: string) => (data += d));
    conn.on('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      reject(new RasError(err.code ?? 'EUNKNOWN', `cannot ask the engine at ${path}: ${err.message}`, { errno: err.errno, syscall: err.syscall }));
    });
    conn.on('end', () => {
      clearTimeout(timer);
      try {
        resolve(JSON.parse(data));
      } catch {
        reject(new RasError('ERR_INVALID_ARG', `${path} did not answer with a status (${data.length} bytes)`));
      }
    });
  });
}
