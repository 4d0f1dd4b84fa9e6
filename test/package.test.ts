// The package as npm would publish it, and the API reference it ships.
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { LOST_CAUSES } from '../src/ledger/ledger';

const ROOT = path.resolve(__dirname, '..');

describe('the package (npm pack --dry-run)', () => {
  const files: string[] = (JSON.parse(execFileSync('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: ROOT, encoding: 'utf8' }))[0].files as { path: string }[]).map((f) => f.path);

  it('has the LICENSE (MIT, as package.json says) and docs/API.md, which the README points to', () => {
    expect(files).toContain('LICENSE');
    expect(fs.readFileSync(path.join(ROOT, 'LICENSE'), 'utf8')).toMatch(/^MIT License[\s\S]*the hugetlb-ras authors/);
    expect(require('../package.json').license).toBe('MIT');
    expect(files).toContain('docs/API.md');
    expect(files).toContain('dist/src/index.js');
    expect(files).toContain('dist/src/cli.js');
    expect(files).toContain('scripts/setup-hugetlbfs.sh');
    // The install script uses the prebuilt binary or builds the addon with build-native.js.
    expect(require('../package.json').scripts.install).toContain('scripts/install.js');
    expect(fs.readFileSync(path.join(ROOT, 'scripts/install.js'), 'utf8')).toContain('build-native.js');
    expect(files).toContain('scripts/install.js');
    expect(files).toContain('scripts/build-native.js');
    expect(files).toContain('binding.gyp');
    expect(files).toContain('common.gypi');
  });

  it('ships every source and input binding.gyp builds from (the install step builds the addons)', () => {
    const gyp = fs.readFileSync(path.join(ROOT, 'binding.gyp'), 'utf8');
    const inputs = [...gyp.matchAll(/"((?:native|vmm|include)\/[^"<]+)"/g)].map((m) => m[1]).filter((p) => fs.existsSync(path.join(ROOT, p)) && fs.statSync(path.join(ROOT, p)).isFile());
    expect(inputs.length).toBeGreaterThan(10);
    expect(inputs.filter((p) => !files.includes(p))).toEqual([]);
  });

  it('ships no benchmark, no sanitizer script, no source maps to sources it does not ship', () => {
    expect(files.filter((f) => f.startsWith('dist/bench'))).toEqual([]);
    expect(files).not.toContain('scripts/check-asan.sh');
    const maps = files.filter((f) => f.endsWith('.map') && !f.startsWith('node_modules/')); // bundled dependencies' own maps are theirs
    for (const m of maps) {
      const map = JSON.parse(fs.readFileSync(path.join(ROOT, m), 'utf8')) as { sources: string[] };
      for (const src of map.sources) expect(files, `${m} -> ${src}`).toContain(path.normalize(path.join(path.dirname(m), src)));
    }
  });
});

describe('docs/API.md', () => {
  const api = fs.readFileSync(path.join(ROOT, 'docs/API.md'), 'utf8');
  it.each(['readThreads', "kind: 'AR' | 'AO'", 'signal: boolean', 'whenIdle({ timeoutMs', 'journalReplay', 'isClosed', '`error`', 'ERR_JOURNAL_WRITE', 'ERR_LISTENER_FAILED', 'durable', 'by: \'vcpu\''])(
    'documents %s',
    (word) => expect(api).toContain(word),
  );
  it('documents every LostCause value', () => {
    for (const c of LOST_CAUSES) expect(api).toContain(`- \`'${c}'\`:`);
  });
});
