// A bad record in the middle of a journal is more than a warning: the engine reports it as an `error`
// event after open, and `hugetlb-ras journal PATH` exits 1 (it still prints what it read).
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { Journal } from '../src/index';
import { openEngine } from './helpers';

const ROOT = path.resolve(__dirname, '..');

function journalWithBadRecord(): { dir: string; journal: string } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ras-bad-'));
  const journal = path.join(dir, 'j');
  const { journal: j } = Journal.open(journal);
  j.checkRegion({ name: 'ram', path: '/x', size: 4 << 20, offset: 0, guestPhysAddr: 0n, hugePageSize: 2 << 20 });
  j.appendLost([{ region: 'ram', guestPhysAddr: 0x1000n, size: 4096, offset: 0x1000, cause: 'recovered', wallTime: '' }]);
  j.appendLost([{ region: 'ram', guestPhysAddr: 0x3000n, size: 4096, offset: 0x3000, cause: 'recovered', wallTime: '' }]);
  j.close();
  const lines = fs.readFileSync(journal, 'utf8').split('\n');
  lines[1] = lines[1].replace('0x1000', '0x1001'); // checksum no longer matches
  fs.writeFileSync(journal, lines.join('\n'));
  return { dir, journal };
}

describe('a bad record in mid-journal', () => {
  it('is an error event of the engine that opens it', async () => {
    const { dir, journal } = journalWithBadRecord();
    const engine = openEngine({ journalPath: journal });
    const errors: (Error & { code?: string })[] = [];
    engine.on('error', (e) => errors.push(e));
    await engine.whenIdle({ timeoutMs: 5_000 });
    expect(errors).toEqual([expect.objectContaining({ code: 'ERR_JOURNAL_BAD_RECORD', path: journal })]);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('makes `hugetlb-ras journal PATH` exit 1', () => {
    const { dir, journal } = journalWithBadRecord();
    const r = spawnSync(process.execPath, [path.join(ROOT, 'dist/src/cli.js'), 'journal', journal], { cwd: ROOT, encoding: 'utf8', timeout: 60_000 });
    expect(r.stdout).toContain('ERR_JOURNAL_BAD_RECORD');
    expect(r.status).toBe(1);
    fs.rmSync(dir, { recursive: true, force: true });
  });
});
