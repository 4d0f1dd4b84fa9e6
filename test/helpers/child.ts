// Child node processes, for what may kill the process (signals, crashes, runaway allocations).
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';

/** In a child script: the package and its testing entry, resolved as an installed package is (package.json exports). */
export const PKG = "require('hugetlb-ras')";
export const TESTING = "require('hugetlb-ras/testing')";

const ROOT = path.resolve(__dirname, '..', '..');

export interface ChildResult {
  status: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Runs a script in a child node process (for what may kill the process). */
export function runChild(script: string, env: Record<string, string> = {}): ChildResult {
  const r = spawnSync(process.execPath, ['-e', script], {
    cwd: ROOT,
    env: { ...process.env, ...env },
    encoding: 'utf8',
    timeout: 60_000,
  });
  return { status: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr };
}

/** Runs a script in a child with an address-space limit, so a runaway allocation fails instead of OOM-killing. */
export function runLimited(script: string, limitKb: number, env: Record<string, string> = {}): ChildResult {
  const r = spawnSync('bash', ['-c', `ulimit -v ${limitKb} && exec "${process.execPath}" -e "$SCRIPT"`], {
    cwd: ROOT,
    env: { ...process.env, ...env, SCRIPT: script },
    encoding: 'utf8',
    timeout: 60_000,
  });
  return { status: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr };
}
