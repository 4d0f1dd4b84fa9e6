// Live migration over a unix socket between two VMM processes, and snapshots to a file. The
// destination answers one line after END: "RESUMED" (its vCPUs run) or "FAILED <why>"; only after
// RESUMED does the source stop for good.
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as readline from 'node:readline';
import type { ReferenceVmm } from '../vmm';
import type { ReferenceVmmOptions } from '../vmm-types';
import { migrateOut, type MigratableVm, type MigrateOutOptions, type MigrateOutResult } from './source';
import { migrateIn, type MigrateInResult, type OpenRestored, type RestorableVm } from './destination';

type DestOptions = Omit<ReferenceVmmOptions, 'regions' | 'vcpus' | 'restore'>;

/** Destination: listens on a unix socket, takes one migration, runs the VM. */
export async function receiveMigration<V extends RestorableVm = ReferenceVmm>(
  socketPath: string,
  opts: DestOptions = {},
  onListening?: () => void,
  open?: OpenRestored<V>,
): Promise<MigrateInResult<V>> {
  fs.rmSync(socketPath, { force: true });
  const server = net.createServer();
  const conn = await new Promise<net.Socket>((resolve, reject) => {
    server.once('error', reject);
    server.once('connection', resolve);
    server.listen(socketPath, () => onListening?.());
  });
  server.close();
  try {
    const res = await migrateIn(conn, opts, open);
    conn.end('RESUMED\n');
    return res;
  } catch (e) {
    conn.end(`FAILED ${String((e as Error).message ?? e).replace(/\n/g, ' ')}\n`);
    throw e;
  }
}

export interface SendResult extends MigrateOutResult { answer: string }

/** Source: migrates over the socket; closes this VMM after RESUMED, resumes its guest otherwise. */
export async function sendMigration(vmm: MigratableVm & { close(): void; resume(): void }, socketPath: string, opts: MigrateOutOptions = {}): Promise<SendResult> {
  const sock = net.createConnection(socketPath);
  await new Promise<void>((resolve, reject) => {
    sock.once('connect', resolve);
    sock.once('error', reject);
  });
  const lines = readline.createInterface({ input: sock });
  const answer = new Promise<string>((resolve) => {
    lines.once('line', resolve);
    lines.once('close', () => resolve('FAILED the destination closed the connection'));
  });
  let res: MigrateOutResult;
  try {
    res = await migrateOut(vmm, sock, opts);
  } catch (e) {
    sock.destroy();
    resumeIfPaused(vmm);
    throw e;
  }
  const a = await answer;
  sock.destroy();
  if (a.trim() !== 'RESUMED') {
    resumeIfPaused(vmm);
    throw new Error(`the destination did not take the VM: ${a}`);
  }
  vmm.close(); // handed over: the source stops for good
  return { ...res, answer: a.trim() };
}

function resumeIfPaused(vmm: MigratableVm & { resume(): void }): void {
  if (vmm.guestStopped()) return; // a dead guest stays stopped: resuming would run its vCPUs from their reset state
  try {
    vmm.machine.dirtyLog(false);
    vmm.resume();
  } catch {
    // not paused yet, or already closed: nothing to resume
  }
}

/** A snapshot: the stream to a file, the guest stopped first. The VMM stays paused (close it or resume it). */
export async function saveSnapshot(vmm: MigratableVm, file: string, opts: Pick<MigrateOutOptions, 'whileStopped'> = {}): Promise<MigrateOutResult> {
  const out = fs.createWriteStream(file);
  const res = await migrateOut(vmm, out, { ...opts, stopFirst: true });
  await new Promise<void>((resolve, reject) => out.end((e?: Error | null) => (e ? reject(e) : resolve())));
  return res;
}

/** Restores a snapshot file in this (new) process and runs it. */
export function restoreSnapshot<V extends RestorableVm = ReferenceVmm>(file: string, opts: DestOptions = {}, open?: OpenRestored<V>): Promise<MigrateInResult<V>> {
  return migrateIn(fs.createReadStream(file), opts, open);
}
