// One error type: whatever the package throws is a RasError with a code of the ErrorCode union.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { Journal, PoisonError, RasError, type ErrorCode } from '../src/index';

describe('error types', () => {
  it('RasError keeps the constructor the addon uses: (code, message, extra)', () => {
    const e = new RasError('ENOMEM', 'ENOMEM: Cannot allocate memory, mmap', { errno: -12, syscall: 'mmap' });
    expect(e).toBeInstanceOf(Error);
    expect(e).toMatchObject({ name: 'RasError', code: 'ENOMEM', message: 'ENOMEM: Cannot allocate memory, mmap', errno: -12, syscall: 'mmap' });
    expect(new RasError('ERR_TIMEOUT', 'x')).toMatchObject({ code: 'ERR_TIMEOUT' });
  });

  it('PoisonError is a RasError with code ERR_POISONED', () => {
    const e = new PoisonError('ram', 0x3000, 0x1_0000_3000n, 0x7f00_0000_3000n, 7, 4);
    expect(e).toBeInstanceOf(RasError);
    expect(e).toMatchObject({ name: 'PoisonError', code: 'ERR_POISONED', region: 'ram', offset: 0x3000, guestPhysAddr: 0x1_0000_3000n, signal: 7, siCode: 4 });
    const code: ErrorCode = e.code;
    expect(code).toBe('ERR_POISONED');
  });

  it('journal errors are RasErrors', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hugetlb-ras-errors-'));
    try {
      const file = path.join(dir, 'not-a-journal');
      fs.writeFileSync(file, 'hello\n', { mode: 0o600 });
      const caught: unknown[] = [];
      for (const f of [() => Journal.open(file), () => Journal.open('')]) {
        try {
          f();
        } catch (e) {
          caught.push(e);
        }
      }
      expect(caught.map((e) => [e instanceof RasError, (e as RasError).code])).toEqual([
        [true, 'ERR_JOURNAL_FORMAT'],
        [true, 'ERR_INVALID_ARG'],
      ]);
      const { journal } = Journal.open(path.join(dir, 'j'));
      journal.close();
      expect(() => journal.appendReset({ region: 'x', guestPhysAddr: 0n, size: 1, wallTime: '' })).toThrow(RasError);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('the ErrorCode union is the list of codes', () => {
  const root = path.join(__dirname, '..');
  const filesUnder = (dir: string, ext: RegExp): string[] =>
    fs.readdirSync(dir, { withFileTypes: true }).flatMap((d) => {
      const p = path.join(dir, d.name);
      return d.isDirectory() ? filesUnder(p, ext) : ext.test(d.name) ? [p] : [];
    });
  const codesIn = (text: string) => new Set([...text.matchAll(/['"`](ERR_[A-Z0-9_]+)['"`]/g)].map((m) => m[1]));
  const union = codesIn(/export type ErrorCode =([\s\S]*?);/.exec(fs.readFileSync(path.join(root, 'src/errors.ts'), 'utf8'))![1]);
  const docs = new Set([...fs.readFileSync(path.join(root, 'docs/API.md'), 'utf8').matchAll(/`(ERR_[A-Z0-9_]+)`/g)].map((m) => m[1]));

  it('every ERR_* code raised in src/ or native/ is in the union and in docs/API.md', () => {
    const raised = new Set<string>();
    for (const f of [...filesUnder(path.join(root, 'src'), /\.ts$/), ...filesUnder(path.join(root, 'native'), /\.(cc|h)$/)])
      for (const c of codesIn(fs.readFileSync(f, 'utf8'))) raised.add(c);
    // Journal warnings (JournalWarning['code']) are reported in journalReplay, never thrown.
    const warnings = codesIn(/code: ([^;]*);/.exec(fs.readFileSync(path.join(root, 'src/ledger/records.ts'), 'utf8'))![1]);
    expect([...warnings].sort()).toEqual(['ERR_JOURNAL_BAD_RECORD', 'ERR_JOURNAL_TORN_TAIL']);
    for (const w of warnings) raised.delete(w);
    const missing = [...raised].filter((c) => !union.has(c));
    expect(missing, 'raised but not in ErrorCode').toEqual([]);
    expect([...raised].filter((c) => !docs.has(c)), 'raised but not in docs/API.md').toEqual([]);
  });

  it('every code of the union is documented', () => {
    expect([...union].filter((c) => !docs.has(c))).toEqual([]);
  });
});
