// Issue 22 item 2: cause 'imported' is accepted everywhere a loss is shown: the metrics (outcome
// imported, not a new failure), the QMP-shaped event log (no event: not a failure of this host), the
// journal as `hugetlb-ras journal` prints it, the status report; and the sizes of a manifest need not
// agree with the destination's (a frame need only be covered).
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Registry } from 'prom-client';
import { afterEach, describe, expect, it } from 'vitest';
import type { LostManifest } from '../src/index';
import { registerMetrics } from '../src/metrics/index';
import { native, PageState } from '../src/native';
import { engineStatus } from '../src/status/report';
import { hugeFile, MiB, openEngine, SUB } from './helpers';

const GPA = 0x3_0000_0000n;
const ROOT = path.resolve(__dirname, '..');
const hex = (v: bigint) => '0x' + v.toString(16);
const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});
const tmp = () => {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'ras-migr-out-'));
  dirs.push(d);
  return d;
};

function manifest(frames: { off: number; size: number }[], hugePageSize = 2 * MiB, size = 4 * MiB, gpa = GPA): LostManifest {
  return {
    format: 'hugetlb-ras-lost',
    version: 1,
    regions: [{ name: 'src', guestPhysAddr: hex(gpa), size, hugePageSize, lost: frames.map((f) => ({ guestPhysAddr: hex(gpa + BigInt(f.off)), size: f.size })) }],
  };
}

describe("cause 'imported' in what operators see", () => {
  it('metrics count it as imported, the event log has no line for it, the journal and the status show it', async () => {
    const d = tmp();
    const journal = path.join(d, 'journal');
    const log = path.join(d, 'events.ndjson');
    const engine = openEngine({ journalPath: journal, eventLog: log });
    const registry = new Registry();
    registerMetrics(engine, { registry });
    const region = engine.mapRegion({ name: 'ram0', path: hugeFile('out'), size: 4 * MiB, guestPhysAddr: GPA });
    expect(engine.importLost(manifest([{ off: 5 * SUB, size: SUB }, { off: 2 * MiB, size: 2 * MiB }]))).toEqual({ imported: 2, alreadyLost: 0 });
    await engine.whenIdle({ timeoutMs: 10_000 });
    const text = await registry.metrics();
    const line = (name: string, labels: string) => text.split('\n').find((l) => l.startsWith(`${name}{`) && labels.split(',').every((x) => l.includes(x)));
    expect(line('hugetlb_ras_memory_errors_total', 'region="ram0",outcome="imported"')).toMatch(/ 2$/);
    expect(line('hugetlb_ras_lost_bytes_total', 'region="ram0",outcome="imported"')).toMatch(new RegExp(` ${SUB + 2 * MiB}$`));
    expect(fs.existsSync(log) ? fs.readFileSync(log, 'utf8') : '').toBe('');
    const status = engineStatus(engine);
    expect(status.regions).toEqual([expect.objectContaining({ name: 'ram0', lostFrames: 2, lostBytes: SUB + 2 * MiB, splitHugePages: 1, lostHugePages: 1 })]);
    void region;
    engine.close();
    const cli = spawnSync(process.execPath, [path.join(ROOT, 'dist/src/cli.js'), 'journal', journal], { cwd: ROOT, encoding: 'utf8', timeout: 60_000 });
    expect(cli.status).toBe(0);
    expect(cli.stdout.match(/cause imported/g)?.length).toBe(2);
  });
});

describe('the huge page sizes of a manifest and of the destination', () => {
  it('a manifest of 1 GiB pages imports into 2 MiB pages: its 4 KiB frames as they are', () => {
    const engine = openEngine();
    const region = engine.mapRegion({ name: 'dst', path: hugeFile('sizes'), size: 4 * MiB, guestPhysAddr: GPA });
    // The source's 1 GiB region starts at GPA; only its first 4 MiB hold lost frames (and are mapped here).
    const m = manifest([{ off: 3 * SUB, size: SUB }, { off: 2 * MiB + SUB, size: SUB }], 1 << 30, 1 << 30);
    expect(engine.importLost(m)).toEqual({ imported: 2, alreadyLost: 0 });
    expect(engine.lostPages().map((p) => [p.offset, p.size])).toEqual([
      [3 * SUB, SUB],
      [2 * MiB + SUB, SUB],
    ]);
    expect([...native.pageStates(region.id)]).toEqual([PageState.Split, PageState.Split]);
    // A whole lost 1 GiB page cannot be covered by this 4 MiB region: refused, nothing changed.
    expect(() => engine.importLost(manifest([{ off: 0, size: 1 << 30 }], 1 << 30, 1 << 30))).toThrow(expect.objectContaining({ code: 'ERR_BAD_MANIFEST' }));
    expect(engine.lostPages().length).toBe(2);
  });

  it('a whole-huge-page frame not aligned to the destination huge pages becomes its 4 KiB frames', () => {
    const engine = openEngine();
    const region = engine.mapRegion({ name: 'dst', path: hugeFile('sizes'), size: 6 * MiB, guestPhysAddr: GPA });
    // The source region started 1 MiB higher: its whole huge page [1 MiB, 3 MiB) here spans two of ours.
    const m = manifest([{ off: 0, size: 2 * MiB }], 2 * MiB, 4 * MiB, GPA + BigInt(MiB));
    expect(engine.importLost(m)).toEqual({ imported: 512, alreadyLost: 0 });
    const lost = engine.lostPages();
    expect(lost.length).toBe(512);
    expect(lost[0].offset).toBe(MiB);
    expect(lost[511].offset).toBe(3 * MiB - SUB);
    expect(lost.every((p) => p.size === SUB)).toBe(true);
    expect([...native.pageStates(region.id)]).toEqual([PageState.Split, PageState.Split, PageState.Normal]);
    expect(region.readAvailable(0, 6 * MiB).lostOffsets).toEqual(lost.map((p) => p.offset));
  });
});
