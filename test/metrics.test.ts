// Metrics: prom-client's registry (registerMetrics) and the textfile the engine keeps for
// node_exporter, with the real parts: Debian's promtool checks the text, Debian's node_exporter serves
// the file over HTTP on loopback and is scraped after a (simulated) poison.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { Registry } from 'prom-client';
import { afterEach, describe, expect, it } from 'vitest';
import { METRIC_NAMES, registerMetrics } from '../src/metrics/index';
import { hugeFile, MiB, openEngine, SUB } from './helpers';

const GPA = 0x1_0000_0000n;
const which = (bin: string) => spawnSync('sh', ['-c', `command -v ${bin}`], { encoding: 'utf8' }).stdout.trim() || undefined;
const PROMTOOL = which('promtool');
const NODE_EXPORTER = which('prometheus-node-exporter') ?? which('node_exporter');
const tmpDirs: string[] = [];
const children: ChildProcess[] = [];
afterEach(() => {
  for (const c of children.splice(0)) c.kill('SIGTERM');
  for (const d of tmpDirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});
const tmpDir = () => {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'ras-metrics-'));
  tmpDirs.push(d);
  return d;
};

/** The value of one sample line `name{labels} value` (labels in any order), or undefined. */
function sample(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const line of text.split('\n')) {
    const m = /^([a-z_:]+)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const have = Object.fromEntries([...(m[2] ?? '').matchAll(/(\w+)="([^"]*)"/g)].map((x) => [x[1], x[2]]));
    if (Object.entries(labels).every(([k, v]) => have[k] === v)) return Number(m[3]);
  }
  return undefined;
}

async function poisonOnce(engine: ReturnType<typeof openEngine>) {
  const region = engine.mapRegion({ name: 'ram0', path: hugeFile('metrics'), size: 4 * MiB, guestPhysAddr: GPA });
  region.write(0, Buffer.alloc(4 * MiB, 7));
  engine.injectPoison(region, 2 * MiB + 5 * SUB, { mode: 'simulate' });
  await engine.whenIdle({ timeoutMs: 10_000 });
  return region;
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
    s.on('error', reject);
  });
}

describe('registerMetrics (prom-client registry)', () => {
  it('counts a recovered poison by kind and outcome, its lost bytes and its times; no address in any label', async () => {
    const engine = openEngine();
    const registry = new Registry();
    const m = registerMetrics(engine, { registry });
    const region = await poisonOnce(engine);
    const text = await registry.metrics();
    for (const name of METRIC_NAMES) expect(text, name).toContain(`# TYPE ${name} `);
    expect(sample(text, 'hugetlb_ras_memory_errors_total', { region: 'ram0', kind: 'AR', outcome: 'recovered' })).toBe(1);
    expect(sample(text, 'hugetlb_ras_memory_errors_total', { region: 'ram0', kind: 'AO', outcome: 'refused' })).toBe(0);
    expect(sample(text, 'hugetlb_ras_lost_bytes_total', { region: 'ram0', outcome: 'recovered' })).toBe(SUB);
    expect(sample(text, 'hugetlb_ras_lost_bytes', { region: 'ram0' })).toBe(SUB);
    expect(sample(text, 'hugetlb_ras_lost_huge_pages', { region: 'ram0', page_size: '2M', state: 'split' })).toBe(1);
    expect(sample(text, 'hugetlb_ras_recovery_duration_seconds_count', { region: 'ram0', page_size: '2M' })).toBe(1);
    expect(sample(text, 'hugetlb_ras_vcpu_stall_seconds_count', { region: 'ram0', page_size: '2M' })).toBe(1);
    expect(sample(text, 'hugetlb_ras_recovery_duration_seconds_sum', { region: 'ram0' })).toBeGreaterThan(0);
    expect(sample(text, 'hugetlb_ras_info', { guard: engine.lostPageGuard, recovery_path: engine.stats().recovery.path })).toBe(1);
    expect(sample(text, 'hugetlb_ras_journal_not_durable_losses')).toBe(0);
    // Bounded labels: no host or guest address anywhere (the region's addresses are known here).
    const labelValues = [...text.matchAll(/="([^"]*)"/g)].map((x) => x[1]);
    for (const v of labelValues) expect(v).not.toMatch(/^0x|^\d{6,}$/);
    expect(text).not.toContain(region.address.toString(16));
    // A guest reset gives the memory back: the gauge follows, the counters do not go down.
    await engine.resetRegion(region);
    const after = await registry.metrics();
    expect(sample(after, 'hugetlb_ras_lost_bytes', { region: 'ram0' })).toBe(0);
    expect(sample(after, 'hugetlb_ras_memory_errors_total', { region: 'ram0', kind: 'AR', outcome: 'recovered' })).toBe(1);
    m.unregister();
    expect(await registry.metrics()).not.toContain('hugetlb_ras_');
  });

  it('a lost frame touched again counts as already_lost', async () => {
    const engine = openEngine();
    const registry = new Registry();
    registerMetrics(engine, { registry });
    const region = await poisonOnce(engine);
    engine.injectPoison(region, 2 * MiB + 5 * SUB + 64, { mode: 'simulate' });
    await engine.whenIdle({ timeoutMs: 10_000 });
    const text = await registry.metrics();
    expect(sample(text, 'hugetlb_ras_memory_errors_total', { region: 'ram0', kind: 'AR', outcome: 'already_lost' })).toBe(1);
    expect(sample(text, 'hugetlb_ras_memory_errors_total', { region: 'ram0', kind: 'AR', outcome: 'recovered' })).toBe(1);
  });
});

describe('the metrics textfile (RasEngine.open({ metrics }))', () => {
  it('bad options are refused before anything opens', () => {
    expect(() => openEngine({ metrics: { textfileDir: '/nonexistent-dir-ras', name: 'vm1' } })).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG' }));
    expect(() => openEngine({ metrics: { textfileDir: tmpDir(), name: '../x' } })).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG' }));
  });

  it('is written at once, rewritten after a poison (temp + rename), and removed on close', async () => {
    const dir = tmpDir();
    const engine = openEngine({ metrics: { textfileDir: dir, name: 'vm1' } });
    const file = path.join(dir, 'hugetlb-ras-vm1.prom');
    await engine.outputsOpened!.textfile!.flush();
    expect(fs.readFileSync(file, 'utf8')).toContain('# TYPE hugetlb_ras_info gauge');
    const ino = fs.statSync(file).ino;
    await poisonOnce(engine);
    await new Promise((r) => setImmediate(r));
    await engine.outputsOpened!.textfile!.flush();
    const text = fs.readFileSync(file, 'utf8');
    expect(sample(text, 'hugetlb_ras_memory_errors_total', { region: 'ram0', kind: 'AR', outcome: 'recovered' })).toBe(1);
    expect(fs.statSync(file).ino).not.toBe(ino); // renamed over, never written in place
    expect(fs.readdirSync(dir)).toEqual(['hugetlb-ras-vm1.prom']); // no temp file left
    engine.close();
    expect(fs.existsSync(file)).toBe(false);
  });

  // Skipped where Debian's prometheus package (promtool) is not installed; .ci/run installs it.
  it.skipIf(!PROMTOOL)('promtool check metrics finds nothing to say about the file', async () => {
    const dir = tmpDir();
    const engine = openEngine({ metrics: { textfileDir: dir, name: 'vm1' } });
    await poisonOnce(engine);
    await new Promise((r) => setImmediate(r));
    await engine.outputsOpened!.textfile!.flush();
    const text = fs.readFileSync(path.join(dir, 'hugetlb-ras-vm1.prom'), 'utf8');
    expect(sample(text, 'hugetlb_ras_memory_errors_total', { region: 'ram0', kind: 'AR', outcome: 'recovered' })).toBe(1);
    const r = spawnSync(PROMTOOL!, ['check', 'metrics'], { input: text, encoding: 'utf8', timeout: 30_000 });
    expect(r.stdout + r.stderr).toBe('');
    expect(r.status).toBe(0);
    // promtool does say something about a bad name: the check can fail.
    const bad = spawnSync(PROMTOOL!, ['check', 'metrics'], { input: '# HELP x_total a\n# TYPE x_total gauge\nx_total 1\n', encoding: 'utf8', timeout: 30_000 });
    expect(bad.stdout + bad.stderr).not.toBe('');
  });

  // Skipped where Debian's prometheus-node-exporter is not installed; .ci/run installs it.
  it.skipIf(!NODE_EXPORTER)('node_exporter (textfile collector, 127.0.0.1) serves the counters after a poison', async () => {
    const dir = tmpDir();
    const engine = openEngine({ metrics: { textfileDir: dir, name: 'vm1' } });
    await poisonOnce(engine);
    await new Promise((r) => setImmediate(r));
    await engine.outputsOpened!.textfile!.flush();
    const port = await freePort();
    const child = spawn(NODE_EXPORTER!, [`--web.listen-address=127.0.0.1:${port}`, '--collector.disable-defaults', '--collector.textfile', `--collector.textfile.directory=${dir}`], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    children.push(child);
    let body = '';
    for (let i = 0; i < 100 && !body.includes('hugetlb_ras_'); i++) {
      try {
        const res = await fetch(`http://127.0.0.1:${port}/metrics`);
        body = await res.text();
      } catch {
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    expect(sample(body, 'hugetlb_ras_memory_errors_total', { region: 'ram0', kind: 'AR', outcome: 'recovered' })).toBe(1);
    expect(sample(body, 'hugetlb_ras_lost_bytes_total', { region: 'ram0', outcome: 'recovered' })).toBe(SUB);
    expect(sample(body, 'node_textfile_scrape_error')).toBe(0);
  });
});
