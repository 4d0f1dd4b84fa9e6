// The journal's lock is the kernel's (an OFD lock on <journal>.lock through the addon): it holds
// across PID namespaces (a VMM in another container of the host) and dies with its owner.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { openEngine, PKG } from './helpers';

let dir: string;
let journal: string;
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ras-lockns-'));
  journal = path.join(dir, 'ras.journal');
});
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

const root = process.getuid?.() === 0;
const ROOT = path.resolve(__dirname, '..');

/** Opens the journal in a child in its own PID namespace; prints the outcome. */
function openInNamespace(j: string): string {
  const script = `
    const { RasEngine } = ${PKG};
    try { const e = RasEngine.open({ reserveBytes: 0, journalPath: process.env.J }); console.log('opened'); e.close(); }
    catch (err) { console.log(err.code); }`;
  const r = spawnSync('unshare', ['--pid', '--fork', '--mount-proc', process.execPath, '-e', script], {
    cwd: ROOT,
    env: { ...process.env, J: j },
    encoding: 'utf8',
    timeout: 60_000,
  });
  expect(r.stderr).toBe('');
  return r.stdout.trim();
}

describe.skipIf(!root)('one writer per journal, across PID namespaces', () => {
  it('a VMM in another PID namespace is refused while the owner runs, and gets the journal once it closed', () => {
    const e = openEngine({ journalPath: journal });
    expect(openInNamespace(journal)).toBe('ERR_JOURNAL_LOCKED');
    e.close();
    expect(openInNamespace(journal)).toBe('opened');
  });

  it('a lock whose owner was killed is free at once, whatever its file says', () => {
    // A child takes the journal and is killed without closing it.
    const script = `const { RasEngine } = ${PKG}; RasEngine.open({ reserveBytes: 0, journalPath: process.env.J }); console.log('held'); setInterval(() => {}, 1000);`;
    const child = spawnSync('bash', ['-c', `"${process.execPath}" -e "$S" & pid=$!; sleep 3; kill -9 $pid; wait $pid; echo killed`], {
      cwd: ROOT,
      env: { ...process.env, J: journal, S: script },
      encoding: 'utf8',
      timeout: 60_000,
    });
    expect(child.stdout.trim().split('\n')).toEqual(['held', 'killed']);
    expect(openInNamespace(journal)).toBe('opened');
    const e = openEngine({ journalPath: journal });
    e.close();
  });

  it('of many openers racing for a stale lock file, exactly one wins (some in their own PID namespace)', () => {
    // A lock file a dead owner left, with a pid that may be anyone's now.
    fs.writeFileSync(`${journal}.lock`, JSON.stringify({ pid: 1, boot: 'x' }) + '\n', { mode: 0o600 });
    const script = `const { RasEngine } = ${PKG};
      try { const e = RasEngine.open({ reserveBytes: 0, journalPath: process.env.J }); console.log('opened'); setTimeout(() => e.close(), 3000); }
      catch (err) { console.log(err.code); }`;
    const r = spawnSync(
      'bash',
      ['-c', 'for i in 1 2 3; do "$N" -e "$S" & unshare --pid --fork --mount-proc "$N" -e "$S" & done; wait'],
      { cwd: ROOT, env: { ...process.env, J: journal, S: script, N: process.execPath }, encoding: 'utf8', timeout: 60_000 },
    );
    const outcomes = r.stdout.trim().split('\n').sort();
    expect(outcomes).toEqual(['ERR_JOURNAL_LOCKED', 'ERR_JOURNAL_LOCKED', 'ERR_JOURNAL_LOCKED', 'ERR_JOURNAL_LOCKED', 'ERR_JOURNAL_LOCKED', 'opened']);
    expect(fs.existsSync(`${journal}.lock`)).toBe(false); // the winner's close() removed it
  });
});
