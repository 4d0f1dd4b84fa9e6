// The README's example runs: it is extracted, type-checked against the package, and run in a child
// process on test files (the 1 GiB region scaled to 2 MiB pages where the pool has no 4 GiB of 1 GiB pages).
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as ts from 'typescript';
import { describe, expect, it } from 'vitest';
import { DIR, DIR_2M, hugeFile, MiB, runChild } from './helpers';

const ROOT = path.resolve(__dirname, '..');
const readme = fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8');
const use = readme.slice(readme.indexOf('## Use'));
const snippet = /```ts\n([\s\S]*?)```/.exec(use)![1];
const STUBS = 'declare function injectMce(gpa: bigint): void;\ndeclare function injectMceRange(gpa: bigint, size: number): void;\n';

function split(code: string): { imports: string; body: string } {
  const lines = code.split('\n');
  return { imports: lines.filter((l) => l.startsWith('import ')).join('\n'), body: lines.filter((l) => !l.startsWith('import ')).join('\n') };
}

describe("the README's example", () => {
  it('sizes are positive multiples of the huge page size of their mount', () => {
    const regions = [...snippet.matchAll(/path: '([^']+)', size: ([^,]+),/g)];
    expect(regions.length).toBeGreaterThan(0);
    for (const [, p, sizeExpr] of regions) {
      const size = Function(`return (${sizeExpr});`)() as number;
      const huge = p.includes('/1G/') ? 2 ** 30 : 2 * MiB;
      expect(size, `${p}: size ${sizeExpr}`).toBeGreaterThan(0);
      expect(size % huge, `${p}: size ${sizeExpr}`).toBe(0);
    }
  });

  it('type-checks against the package (strict)', () => {
    const { imports, body } = split(snippet);
    const file = path.join(ROOT, 'test', `.readme-snippet-${process.pid}.ts`);
    fs.writeFileSync(file, imports.replace("'hugetlb-ras'", "'../src/index'") + '\n' + STUBS + 'export async function main(): Promise<void> {\n' + body + '\n}\n');
    try {
      const program = ts.createProgram([file], { strict: true, noEmit: true, target: ts.ScriptTarget.ES2022, module: ts.ModuleKind.CommonJS, types: ['node'], lib: ['lib.es2022.d.ts'], skipLibCheck: true, esModuleInterop: true });
      const diags = ts.getPreEmitDiagnostics(program).map((d) => ts.flattenDiagnosticMessageText(d.messageText, '\n'));
      expect(diags).toEqual([]);
    } finally {
      fs.rmSync(file, { force: true });
    }
  });

  it('runs (child process, test files and journal)', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ras-readme-'));
    const ram = hugeFile('readme-ram');
    const shm = hugeFile('readme-shm');
    let { imports, body } = split(snippet);
    body = body
      .replace("'/var/lib/vmm/ras.journal'", JSON.stringify(path.join(dir, 'ras.journal')))
      .replace(/'\/mnt\/hugetlb-ras\/1G\/[^']+'/, JSON.stringify(ram))
      .replace(/'\/mnt\/hugetlb-ras\/2M\/[^']+'/, JSON.stringify(shm))
      // 1 GiB pages -> 2 MiB pages: the same number of huge pages, in the 2 MiB test pool
      .replace(/size: ([^,]+),(\s*guestPhysAddr: 0x1_0000_0000n)/, (_m, e, rest) => `size: (${e}) / 512,${rest}`);
    expect(DIR_2M.startsWith(DIR)).toBe(true);
    const js = ts.transpileModule(imports + '\n' + STUBS + '(async () => {\n' + body + '\nengine.close(); console.log("README OK");\n})().catch((e) => { console.error(e); process.exit(1); });\n', {
      compilerOptions: { module: ts.ModuleKind.CommonJS, target: ts.ScriptTarget.ES2022 },
    }).outputText;
    const r = runChild('function injectMce() {}\nfunction injectMceRange() {}\n' + js);
    fs.rmSync(dir, { recursive: true, force: true });
    expect(r.stderr).toBe('');
    expect(r.stdout).toContain('README OK');
    expect(r.status).toBe(0);
  });
});
