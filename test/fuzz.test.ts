// Property-based tests over the public API (fast-check): hostile arguments (wrong types, negative,
// NaN, Infinity, huge, unaligned, out of range, overlapping, vanished paths, closed engines and
// regions) must give an Error with a `code` (syscall failures also `errno` and `syscall`) and change
// nothing: the canary regions still verify, the ledgers are unchanged, /proc/self/maps shows no new
// mapping of a hugetlbfs file and no file was left (or resized) in the mount dirs.
//
// Reproducible: every property runs with a fixed seed (FUZZ_SEED, default below); a failure prints
// the seed, the path and the shrunk counterexample. FUZZ_RUNS scales the number of runs (FUZZ_RUNS=10
// for a long soak; the default keeps the file well under 30 s).
//
// Inputs that kill the process or could exhaust the machine's memory are never generated in this
// process; each has an explicit test below that runs it in a child process instead.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import fc from 'fast-check';
import { afterEach, describe, expect, it } from 'vitest';
import { fillPattern, RasEngine, Region, startVcpuLoad, verifyPattern, type LostPage, type VcpuLoadOptions } from '../src/index';
import { DIR, DIR_1G, DIR_2M, hugeFile, MiB, openEngine, runChild, SUB } from './helpers';

const SEED = Number(process.env.FUZZ_SEED ?? 20240611);
const SCALE = Number(process.env.FUZZ_RUNS ?? 1);
function params(numRuns: number): fc.Parameters<unknown> {
  return { seed: SEED, numRuns: Math.max(1, Math.round(numRuns * SCALE)) };
}

const CANARY_SEED = 0xc0ffee;
const FOREIGN_SEED = 0xf00d;
const PREFIX = `test-${process.pid}-`;
const pkg = "require('./dist/src/index.js')";

// --- the world a failed call must leave as it was ------------------------------------------------

/** Lines of /proc/self/maps that map a file under the hugetlbfs mount dir. */
function hugeMaps(): number {
  return fs
    .readFileSync('/proc/self/maps', 'utf8')
    .split('\n')
    .filter((l) => l.includes(DIR)).length;
}

/** This process's test files in the mount dirs, with their sizes (a resized file is a change too). */
function ourFiles(): string[] {
  const out: string[] = [];
  for (const d of [DIR_2M, DIR_1G]) {
    let names: string[] = [];
    try {
      names = fs.readdirSync(d);
    } catch {
      continue;
    }
    for (const n of names) {
      if (!n.startsWith(PREFIX)) continue;
      const p = path.join(d, n);
      try {
        out.push(`${p} ${fs.lstatSync(p).size}`);
      } catch {
        /* removed meanwhile */
      }
    }
  }
  return out.sort();
}

interface Fx {
  engine: RasEngine;
  other: RasEngine;
  canary: Region;
  canaryPath: string;
  foreign: Region;
  unmapped: Region;
  dead: RasEngine;
  deadRegion: Region;
  fakes: unknown[];
}

interface World {
  maps: number;
  files: string[];
  /** The current directory: a relative path lands here. */
  cwd: string[];
  lost: LostPage[];
  otherLost: LostPage[];
}

function world(fx: Fx): World {
  return { maps: hugeMaps(), files: ourFiles(), cwd: fs.readdirSync(process.cwd()).sort(), lost: fx.engine.lostPages(), otherLost: fx.other.lostPages() };
}

/**
 * The engine under test with a 2 MiB canary (guest physical 0, filled), a second engine with a
 * region of its own (foreign to the first, also a canary), an unmapped region and a closed engine.
 */
function fixture(): Fx {
  const engine = openEngine();
  const canaryPath = hugeFile('canary');
  const canary = engine.mapRegion({ name: 'canary', path: canaryPath, size: 2 * MiB, guestPhysAddr: 0n });
  fillPattern(canary, CANARY_SEED);
  const other = openEngine();
  const foreign = other.mapRegion({ name: 'foreign', path: hugeFile('foreign'), size: 2 * MiB, guestPhysAddr: 1n << 40n });
  fillPattern(foreign, FOREIGN_SEED);
  const goneFile = hugeFile('gone');
  const unmapped = engine.mapRegion({ name: 'gone', path: goneFile, size: 2 * MiB, guestPhysAddr: 1n << 41n });
  engine.unmapRegion(unmapped);
  fs.rmSync(goneFile);
  const dead = openEngine();
  const deadRegion = dead.mapRegion({ name: 'dead', path: hugeFile('dead'), size: 2 * MiB });
  dead.close();
  const fakes: unknown[] = [
    Object.create(Region.prototype),
    { ...canary },
    { id: 1, name: 'canary', size: 2 * MiB },
    null,
    undefined,
    0,
    'canary',
    Symbol('region'),
  ];
  return { engine, other, canary, canaryPath, foreign, unmapped, dead, deadRegion, fakes };
}

function expectCanaries(fx: Fx, what: string): void {
  for (const [r, seed] of [
    [fx.canary, CANARY_SEED],
    [fx.foreign, FOREIGN_SEED],
  ] as const) {
    const v = verifyPattern(r, seed);
    expect({ wrong: v.wrongBytes, unreadable: v.unreadableOffsets.length, checked: v.checkedBytes }, `${what}: canary ${r.name}`).toEqual({
      wrong: 0,
      unreadable: 0,
      checked: r.size,
    });
  }
}

/** A clear error: an Error with a non-empty string `code`; a syscall failure also errno and syscall. */
function expectCoded(err: unknown, what: string): asserts err is Error & { code: string } {
  expect(err, `${what}: threw something that is not an Error`).toBeInstanceOf(Error);
  const e = err as Error & { code?: unknown; errno?: unknown; syscall?: unknown };
  expect(typeof e.code === 'string' && e.code.length > 0, `${what}: ${e.name} without a code: ${e.message}`).toBe(true);
  const sys = !(e.code as string).startsWith('ERR_');
  if (sys || e.errno !== undefined) expect(typeof e.errno, `${what}: ${String(e.code)} errno`).toBe('number');
  if (sys || e.syscall !== undefined) {
    expect(typeof e.syscall, `${what}: ${String(e.code)} syscall`).toBe('string');
    expect((e.syscall as string).length, `${what}: ${String(e.code)} syscall`).toBeGreaterThan(0);
  }
}

function expectCleanFailure(fx: Fx, err: unknown, before: World, what: string): void {
  expectCoded(err, what);
  expect(world(fx), `${what}: a failed call changed something`).toEqual(before);
  expectCanaries(fx, what);
}

type Outcome<T> = { ok: true; value: T } | { ok: false; error: unknown };
async function attempt<T>(fn: () => T | Promise<T>): Promise<Outcome<T>> {
  try {
    return { ok: true, value: await fn() };
  } catch (error) {
    return { ok: false, error };
  }
}

function show(v: unknown): string {
  return fc.stringify(v);
}

function describeBytes(b: unknown): string {
  if (b instanceof Uint8Array) return `<${b.constructor.name} of ${b.length} bytes at byteOffset ${b.byteOffset}>`;
  return show(b);
}

// --- hostile values ---------------------------------------------------------------------------------

const ODD_NUMBERS = [
  -1, -0, 0.5, 1.5, -4096, NaN, Infinity, -Infinity, 2 ** 31, 2 ** 32, 2 ** 52, 2 ** 53, 2 ** 53 + 2, 2 ** 64,
  Number.MAX_SAFE_INTEGER, -Number.MAX_SAFE_INTEGER, Number.MAX_VALUE, Number.MIN_VALUE, Number.EPSILON,
];
const oddNumber = fc.oneof(fc.constantFrom(...ODD_NUMBERS), fc.double(), fc.integer({ min: -(2 ** 31), max: -1 }));
// Wrong types, strings excluded: a string where a path is expected is a (relative) path, and a
// journal at a random path would be created (in the current directory): see harmlessString.
const wrongTypeNotString = fc.oneof(
  fc.boolean(),
  fc.constantFrom(null, undefined),
  fc.bigInt({ min: -(2n ** 70n), max: 2n ** 70n }),
  fc.constantFrom<unknown>(
    Symbol('hostile'),
    {},
    [],
    [4096],
    () => 4096,
    new Date(0),
    Buffer.alloc(2),
    { valueOf: () => 4096 },
    new Number(4096),
    Object.create(null),
  ),
);
/** Strings that are safe to hand to anything that takes a path: they cannot name a creatable file. */
const harmlessString = fc.oneof(
  fc.constantFrom('', '\0', 'a\0b', '/proc/self/nonexistent/x', '/dev/null/x'),
  fc.string({ maxLength: 6 }).map((s) => `/proc/self/nonexistent/${s}`),
);
const wrongType = fc.oneof(
  wrongTypeNotString,
  harmlessString,
  fc.constantFrom('4096', '0x200000', 'auto', 'simulate'),
  fc.string({ maxLength: 6 }).map((s) => `not-a-number ${s}`),
);
const hostile = fc.oneof(oddNumber, wrongType);

/** A safe integer that would ask for more memory than a test may take (reserve, region size). */
const bigValid = (v: unknown, limit: number) => typeof v === 'number' && Number.isSafeInteger(v) && v > limit;

function offsetsIn(size: number, extra: number[] = []) {
  return fc.oneof(
    { weight: 3, arbitrary: fc.constantFrom(0, 1, 7, 4095, 4096, size - 1, size, size + 1, 2 * MiB - 1, 2 * MiB, ...extra) },
    { weight: 3, arbitrary: fc.nat({ max: size + 2 * SUB }) },
    { weight: 2, arbitrary: hostile },
  );
}

// --- properties -------------------------------------------------------------------------------------

describe('fuzz: hostile arguments get a coded error and change nothing', () => {
  const extra: string[] = [];
  afterEach(() => {
    for (const p of extra.splice(0).reverse()) fs.rmSync(p, { force: true, recursive: true });
  });

  it('RasEngine.open(options)', async () => {
    const fx = fixture();
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), `fuzz-${process.pid}-`));
    extra.push(tmp);
    let n = 0;
    const journalArb = fc.oneof(
      fc.constantFrom<unknown>(undefined, '', 'a\0b', `${tmp}/no/such/dir/j`, tmp, fx.canaryPath, DIR_2M),
      fc.constant('FRESH'),
      wrongTypeNotString,
      harmlessString,
    );
    const reserveArb = fc
      .oneof(fc.constantFrom<unknown>(undefined, 'auto', 'AUTO', 0, 2 * MiB, 4096, 2 * MiB + 1), oddNumber, wrongType)
      // reserveBytes is pre-faulted memory: a valid but huge value would eat the machine (see the
      // explicit test "reserveBytes beyond the machine's memory").
      .filter((v) => !bigValid(v, 64 * MiB));
    const optsArb = fc.oneof(
      { weight: 1, arbitrary: fc.constantFrom<unknown>(null, 5, 'guard', [], () => ({}), undefined) },
      {
        weight: 6,
        arbitrary: fc.record(
          {
            lostPageGuard: fc.oneof(fc.constantFrom<unknown>('auto', 'uffd', 'guard', 'hwpoison', 'HWPOISON', '', 'none'), wrongType),
            reserveBytes: reserveArb,
            journalPath: journalArb,
            kernelReadsAroundPoison: fc.oneof(fc.boolean(), hostile),
            readThreads: fc.oneof(fc.constantFrom<unknown>(0, 1, 2, 16, 17, 1000), hostile),
          },
          { requiredKeys: [] },
        ),
      },
    );
    await fc.assert(
      fc.asyncProperty(optsArb, async (raw) => {
        let opts = raw;
        if (opts && typeof opts === 'object' && (opts as { journalPath?: unknown }).journalPath === 'FRESH')
          opts = { ...opts, journalPath: path.join(tmp, `journal-${n++}`) };
        const before = world(fx);
        const out = await attempt(() => RasEngine.open(opts as never));
        const what = `RasEngine.open(${show(opts)})`;
        if (!out.ok) return expectCleanFailure(fx, out.error, before, what);
        try {
          const o = (opts ?? {}) as Record<string, unknown>;
          // What was accepted must have been valid.
          expect(typeof opts === 'object' || opts === undefined, `${what}: accepted non-object options`).toBe(true);
          // null counts as "not given" here (as in mapRegion and injectPoison options).
          expect([undefined, null, 'auto', 'uffd', 'guard', 'hwpoison'], what).toContain(o.lostPageGuard);
          expect(o.reserveBytes === undefined || o.reserveBytes === 'auto' || (Number.isSafeInteger(o.reserveBytes) && (o.reserveBytes as number) >= 0), what).toBe(true);
          expect(o.readThreads === undefined || (Number.isSafeInteger(o.readThreads) && (o.readThreads as number) >= 0), what).toBe(true);
          expect(o.kernelReadsAroundPoison === undefined || typeof o.kernelReadsAroundPoison === 'boolean', what).toBe(true);
          expect(['uffd', 'guard', 'hwpoison'], what).toContain(out.value.lostPageGuard);
        } finally {
          out.value.close();
          out.value.close();
        }
        expect(hugeMaps(), `${what}: open+close left mappings`).toBe(before.maps);
        expect(fs.readdirSync(process.cwd()).sort(), `${what}: created a file in the current directory`).toEqual(before.cwd);
        expectCanaries(fx, what);
        expect(fx.engine.lostPages()).toEqual(before.lost);
      }),
      params(150),
    );
  });

  it('engine.mapRegion(spec) on fresh, vanished and foreign paths', async () => {
    const fx = fixture();
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), `fuzz-${process.pid}-`));
    extra.push(tmp);
    const hugeDir = hugeFile('dir');
    fs.mkdirSync(hugeDir);
    extra.push(hugeDir);
    const fifo = hugeFile('fifo');
    expect(spawnSync('mkfifo', [fifo]).status).toBe(0);
    const outsideFile = path.join(tmp, 'outside');
    fs.writeFileSync(outsideFile, 'x');
    // hugetlbfs has no symlinks (EINVAL): the links live outside and point in.
    const dirLink = path.join(tmp, 'dir-link');
    fs.symlinkSync(DIR_2M, dirLink);
    let n = 0;
    const PATH_KINDS = ['fresh', 'fresh', 'fresh', 'fresh1G', 'relative', 'dirLink', 'fileLinkIn', 'notHuge', 'deletedDir', 'mountRoot',
      'hugeDir', 'fifo', 'fileAsDir', 'nul', 'empty', 'hostile'] as const;
    const MAY_MAP: readonly PathKind[] = ['fresh', 'relative', 'dirLink'];
    type PathKind = (typeof PATH_KINDS)[number];
    const specArb = fc.oneof(
      { weight: 1, arbitrary: fc.constantFrom<unknown>(null, undefined, 5, 'spec', [], () => ({})).map((s) => ({ spec: s, kind: 'none' as PathKind, hostilePath: undefined })) },
      {
        weight: 12,
        arbitrary: fc.record(
          {
            kind: fc.constantFrom(...PATH_KINDS),
            hostilePath: fc.oneof(wrongTypeNotString, harmlessString),
            name: fc.oneof({ weight: 6, arbitrary: fc.constant('FRESH') }, fc.constantFrom<unknown>('canary', '', 'x'.repeat(201), 'x'.repeat(200)), wrongType),
            size: fc
              .oneof(
                { weight: 6, arbitrary: fc.constantFrom<unknown>(2 * MiB, 4 * MiB) },
                { weight: 4, arbitrary: fc.constantFrom<unknown>(0, 4096, 3 * MiB, 2 * MiB + 1, 2 * MiB - 4096, 2 ** 40, 2 ** 51, 2 ** 52) },
                { weight: 3, arbitrary: hostile },
              )
              // A valid size beyond a few huge pages would take the pool other tests need.
              .filter((v) => !(bigValid(v, 8 * MiB) && (v as number) < 2 ** 36)),
            offset: fc.oneof({ weight: 4, arbitrary: fc.constantFrom<unknown>(undefined, 0, 2 * MiB) }, fc.constantFrom<unknown>(4096, MiB, 2 ** 40, 2 ** 53), hostile),
            guestPhysAddr: fc.oneof(
              { weight: 4, arbitrary: fc.constantFrom<unknown>(undefined, 1n << 32n, 1n << 33n, 2 ** 34) },
              fc.constantFrom<unknown>(0n, 1n << 20n, 0, 2 * MiB - 1, -1n, -1, 1n << 52n, (1n << 52n) - 2n * BigInt(MiB), 1.5, 2 ** 53),
              hostile,
            ),
            share: fc.oneof({ weight: 3, arbitrary: fc.constantFrom<unknown>(undefined, false, true) }, wrongType),
            consumers: fc.oneof(
              { weight: 3, arbitrary: fc.constantFrom<unknown>(undefined, [], ['vfio'], ['vhost-user', 'ivshmem'], ['vfio', 'vfio']) },
              fc.constantFrom<unknown>(['gpu'], 'vfio', [1], [null], { 0: 'vfio', length: 1 }),
              wrongType,
            ),
          },
          { requiredKeys: ['kind', 'hostilePath', 'name', 'size'] },
        ).map(({ kind, hostilePath, ...spec }) => ({ spec: spec as unknown, kind, hostilePath })),
      },
    );
    const pathFor = (kind: PathKind, hostilePath: unknown): unknown => {
      switch (kind) {
        case 'fresh':
          return hugeFile('fz');
        case 'fresh1G':
          return hugeFile('fz', DIR_1G);
        case 'relative':
          return path.relative(process.cwd(), hugeFile('fz-rel'));
        case 'dirLink':
          return path.join(dirLink, path.basename(hugeFile('fz-dl')));
        case 'fileLinkIn': {
          const l = path.join(tmp, `file-link-${n++}`);
          fs.symlinkSync(hugeFile('fz-fl'), l);
          return l;
        }
        case 'notHuge':
          return path.join(tmp, `not-huge-${n++}`);
        case 'deletedDir': {
          const d = hugeFile('vanished');
          fs.mkdirSync(d);
          fs.rmdirSync(d);
          return path.join(d, 'ram');
        }
        case 'mountRoot':
          return DIR_2M;
        case 'hugeDir':
          return hugeDir;
        case 'fifo':
          return fifo;
        case 'fileAsDir':
          return path.join(fx.canaryPath, 'ram');
        case 'nul':
          return `${hugeFile('nul')}\0x`;
        case 'empty':
          return '';
        default:
          return hostilePath;
      }
    };
    await fc.assert(
      fc.asyncProperty(specArb, async ({ spec: raw, kind, hostilePath }) => {
        let spec = raw;
        if (spec && typeof spec === 'object' && !Array.isArray(spec)) {
          const s = { ...(spec as Record<string, unknown>) };
          s.path = pathFor(kind, hostilePath);
          if (s.name === 'FRESH') s.name = `fz${n++}`;
          spec = s;
        }
        const s = (spec ?? {}) as Record<string, unknown>;
        const before = world(fx);
        const outsideBefore = fs.readdirSync(tmp).sort();
        const out = await attempt(() => fx.engine.mapRegion(spec as never));
        const what = `mapRegion(${show(spec)}) [${kind}]`;
        expect(fs.readdirSync(tmp).sort(), `${what}: created a file outside hugetlbfs`).toEqual(outsideBefore);
        expect(fs.readFileSync(outsideFile, 'utf8'), what).toBe('x');
        if (!out.ok) {
          expectCleanFailure(fx, out.error, before, what);
          // Whatever looks valid must map (only a full huge page pool may say no).
          if (MAY_MAP.includes(kind)) {
            const gpa = s.guestPhysAddr ?? 0n;
            const valid =
              typeof s.name === 'string' && s.name.length > 0 && s.name.length <= 200 && s.name !== 'canary' &&
              typeof s.size === 'number' && Number.isSafeInteger(s.size) && s.size > 0 && s.size % (2 * MiB) === 0 && s.size <= 8 * MiB &&
              (s.offset === undefined || (Number.isSafeInteger(s.offset) && (s.offset as number) % (2 * MiB) === 0 && (s.offset as number) >= 0)) &&
              (typeof gpa === 'bigint' || Number.isSafeInteger(gpa)) && BigInt(gpa as bigint) >= BigInt(2 * MiB) && BigInt(gpa as bigint) + BigInt(s.size) <= 1n << 52n &&
              (s.share === undefined || typeof s.share === 'boolean') &&
              (s.consumers === undefined || (Array.isArray(s.consumers) && s.consumers.every((c) => ['vhost-user', 'ivshmem', 'vfio'].includes(c))));
            if (valid) expect((out.error as { code?: string }).code, `${what}: a valid spec was refused`).toBe('ENOMEM');
          }
          return;
        }
        const region = out.value;
        try {
          expect(MAY_MAP.includes(kind), `${what}: mapped a path of kind ${kind}`).toBe(true);
          expect(region.size, what).toBe(s.size);
          expect(region.hugePageSize, what).toBe(2 * MiB);
          expect(region.guestPhysAddr, what).toBe(BigInt((s.guestPhysAddr ?? 0n) as bigint));
          expect(region.guestPhysAddr >= BigInt(2 * MiB), `${what}: overlaps the canary's guest physical range`).toBe(true);
          expect(region.read(0, 8).length).toBe(8);
        } finally {
          fx.engine.unmapRegion(region);
          fs.rmSync(path.resolve(region.path), { force: true });
        }
        expect(hugeMaps(), `${what}: unmapRegion left a mapping`).toBe(before.maps);
        expectCanaries(fx, what);
      }),
      params(300),
    );
  });

  it('engine.mapRegion(spec) over files already mapped or present: overlaps and resizes', async () => {
    const fx = fixture();
    const spare = hugeFile('spare');
    fs.writeFileSync(spare, '');
    fs.truncateSync(spare, 2 * MiB);
    const canaryIno = fs.statSync(fx.canaryPath);
    let n = 0;
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), `fuzz-${process.pid}-`));
    extra.push(tmp);
    const dirLink = path.join(tmp, 'dir-link');
    fs.symlinkSync(DIR_2M, dirLink);
    const KINDS = ['canary', 'canaryAlias', 'canaryDirLink', 'canaryFileLink', 'canaryHardlink', 'spare', 'fresh'] as const;
    const arb = fc.record({
      kind: fc.constantFrom(...KINDS),
      size: fc.constantFrom(2 * MiB, 4 * MiB, 3 * MiB, 2 ** 40, 2 ** 46),
      offset: fc.constantFrom(undefined, 0, 2 * MiB, 4 * MiB),
      guestPhysAddr: fc.constantFrom(undefined, 0n, 1n << 20n, (1n << 21n) - 1n, 1n << 32n),
    });
    const pathFor = (kind: (typeof KINDS)[number]): string => {
      const base = path.basename(fx.canaryPath);
      switch (kind) {
        case 'canary':
          return fx.canaryPath;
        case 'canaryAlias':
          return `${DIR_2M}/../${path.basename(DIR_2M)}//${base}`;
        case 'canaryDirLink':
          return path.join(dirLink, base);
        case 'canaryFileLink': {
          const l = path.join(tmp, `file-link-${n}`);
          fs.symlinkSync(fx.canaryPath, l);
          return l;
        }
        case 'canaryHardlink': {
          const l = hugeFile('hard');
          fs.linkSync(fx.canaryPath, l);
          return l;
        }
        case 'spare':
          return spare;
        default:
          return hugeFile('fz');
      }
    };
    await fc.assert(
      fc.asyncProperty(arb, async ({ kind, ...rest }) => {
        const spec = { name: `ov${n++}`, path: pathFor(kind), ...rest };
        if (spec.offset === undefined) delete (spec as { offset?: number }).offset;
        if (spec.guestPhysAddr === undefined) delete (spec as { guestPhysAddr?: bigint }).guestPhysAddr;
        const before = world(fx);
        const out = await attempt(() => fx.engine.mapRegion(spec));
        const what = `mapRegion(${show(spec)}) [${kind}]`;
        if (!out.ok) return expectCleanFailure(fx, out.error, before, what);
        const region = out.value;
        try {
          const st = fs.statSync(spec.path);
          const off = spec.offset ?? 0;
          const sameFile = st.dev === canaryIno.dev && st.ino === canaryIno.ino;
          expect(sameFile && off < 2 * MiB, `${what}: maps the canary's file range a second time`).toBe(false);
          expect(region.guestPhysAddr >= BigInt(2 * MiB), `${what}: overlaps the canary's guest physical range`).toBe(true);
        } finally {
          fx.engine.unmapRegion(region);
          if (kind === 'fresh') fs.rmSync(spec.path, { force: true });
        }
        expectCanaries(fx, what);
      }),
      params(80),
    );
  });

  it('region.read(offset, length) / region.write(offset, bytes), clean and poisoned', async () => {
    const fx = fixture();
    const size = 4 * MiB;
    const clean = fx.engine.mapRegion({ name: 'clean', path: hugeFile('clean'), size, guestPhysAddr: 1n << 32n });
    fillPattern(clean, 11);
    const cleanRef = clean.read(0, size);
    const sick = fx.engine.mapRegion({ name: 'sick', path: hugeFile('sick'), size, guestPhysAddr: 1n << 33n });
    fillPattern(sick, 12);
    fx.engine.injectPoison(sick, 0x5123, { mode: 'simulate' });
    fx.engine.injectPoison(sick, 2 * MiB + 0x3000, { mode: 'simulate' });
    await fx.engine.whenIdle();
    const lost = fx.engine.lostPages().filter((l) => l.region === 'sick');
    expect(lost.map((l) => [l.offset, l.size])).toEqual([
      [0x5000, SUB],
      [2 * MiB + 0x3000, SUB],
    ]);
    const lostAt = (off: number, len: number) => lost.find((l) => l.offset < off + len && off < l.offset + l.size);
    const sickRef = Buffer.alloc(size);
    for (let o = 0; o < size; o += SUB) if (!lostAt(o, 1)) sick.read(o, SUB).copy(sickRef, o);
    const foreignRef = fx.foreign.read(0, fx.foreign.size);
    const refs = new Map<Region, Buffer>([
      [clean, cleanRef],
      [sick, sickRef],
      [fx.foreign, foreignRef],
    ]);
    const bytesArb = fc.oneof(
      { weight: 6, arbitrary: fc.uint8Array({ maxLength: 9000 }).map((a) => Buffer.from(a)) },
      { weight: 2, arbitrary: fc.uint8Array({ minLength: 3, maxLength: 64 }).map((a) => a.subarray(1, a.length - 1)) },
      {
        weight: 2,
        arbitrary: fc.oneof(
          fc.constantFrom<unknown>(new Float32Array(4), new DataView(new ArrayBuffer(4)), [1, 2, 3], new Uint8ClampedArray(4), new ArrayBuffer(8)),
          wrongType,
        ),
      },
    );
    const arb = fc.record({
      op: fc.constantFrom('read', 'write'),
      target: fc.constantFrom('clean', 'sick', 'foreign', 'unmapped', 'dead'),
      offset: offsetsIn(size, [0x5000 - 1, 0x5000, 0x5fff, 0x6000, 2 * MiB + 0x3000 - 8]),
      length: fc.oneof(fc.constantFrom<unknown>(0, 1, 8, 4096, 8192, 2 * MiB, size, size + 1), fc.nat({ max: 0x11000 }), hostile),
      bytes: bytesArb,
    });
    await fc.assert(
      fc.asyncProperty(arb, async ({ op, target, offset, length, bytes }) => {
        const region = { clean, sick, foreign: fx.foreign, unmapped: fx.unmapped, dead: fx.deadRegion }[target];
        const ref = refs.get(region);
        const before = world(fx);
        const what = `${target}.${op}(${show(offset)}, ${op === 'read' ? show(length) : describeBytes(bytes)})`;
        const out = await attempt(() => (op === 'read' ? region.read(offset as number, length as number) : region.write(offset as number, bytes as Uint8Array)));
        const len = op === 'read' ? (length as number) : (bytes as Uint8Array)?.length;
        const validArgs =
          Number.isSafeInteger(offset) && (offset as number) >= 0 && Number.isSafeInteger(len) && len >= 0 &&
          (offset as number) + len <= region.size && (op === 'read' || bytes instanceof Uint8Array);
        const poisoned = region === sick && validArgs && len > 0 ? lostAt(offset as number, len) : undefined;
        if (!out.ok) {
          expectCleanFailure(fx, out.error, before, what);
          const code = (out.error as { code: string }).code;
          if (ref && validArgs) {
            expect(poisoned, `${what}: valid access refused with ${code}`).toBeDefined();
            expect(code, what).toBe('ERR_POISONED');
            const at = (out.error as { offset: number }).offset;
            expect(at >= poisoned!.offset && at < poisoned!.offset + SUB, `${what}: PoisonError.offset ${at}`).toBe(true);
          }
          if (!ref && validArgs) expect(code, what).toBe('ERR_REGION_CLOSED');
          return;
        }
        expect(ref && validArgs && !poisoned, `${what}: succeeded`).toBe(true);
        const off = offset as number;
        if (op === 'read') {
          expect((out.value as Buffer).equals(ref!.subarray(off, off + len)), `${what}: wrong data`).toBe(true);
        } else {
          expect(region.read(off, len).equals(Buffer.from((bytes as Uint8Array).buffer, (bytes as Uint8Array).byteOffset, len)), `${what}: not written`).toBe(true);
          region.write(off, ref!.subarray(off, off + len));
        }
        expect(world(fx), what).toEqual(before);
        expectCanaries(fx, what);
      }),
      params(400),
    );
  });

  it('a region.write that fails on lost memory changes nothing of the region', async () => {
    const fx = fixture();
    const sick = fx.engine.mapRegion({ name: 'sick', path: hugeFile('sick'), size: 2 * MiB, guestPhysAddr: 1n << 33n });
    fillPattern(sick, 12);
    fx.engine.injectPoison(sick, 0x5000, { mode: 'simulate' });
    await fx.engine.whenIdle();
    const arb = fc.record({ offset: fc.integer({ min: 0x5000 - 0x3000, max: 0x5fff }), length: fc.integer({ min: 1, max: 0x4000 }) });
    await fc.assert(
      fc.asyncProperty(arb, async ({ offset, length }) => {
        const len = Math.min(length, sick.size - offset);
        const what = `sick.write(${offset}, <${len} bytes>) over the lost subpage 0x5000`;
        const out = await attempt(() => sick.write(offset, Buffer.alloc(len, 0xee)));
        if (offset + len <= 0x5000) {
          // Entirely before the lost subpage: a normal write; put the pattern back.
          expect(out.ok, what).toBe(true);
          fillPatternAround(sick, 12);
          return;
        }
        expect(out.ok, `${what}: succeeded`).toBe(false);
        expectCoded(!out.ok && out.error, what);
        const v = verifyPattern(sick, 12);
        expect(v.wrongBytes, `${what}: a failed write changed guest memory (first wrong offset 0x${v.firstWrongOffset.toString(16)})`).toBe(0);
      }),
      params(40),
    );
  });

  it('engine.injectPoison(region, offset, options)', async () => {
    const fx = fixture();
    const size = 4 * MiB;
    const target = fx.engine.mapRegion({ name: 'inj', path: hugeFile('inj'), size, guestPhysAddr: 1n << 34n });
    fillPattern(target, 13);
    // Real MADV_HWPOISON must never be reached from a fuzz test: only where it is unusable do
    // 'madvise' and 'auto' get through (they then fail cleanly or simulate).
    // (auto prefers poison markers, so ask for hwpoison itself: it opens only where usable.)
    const realPoisonPossible = (() => {
      try {
        openEngine({ lostPageGuard: 'hwpoison' });
        return true;
      } catch {
        return false;
      }
    })();
    const modeArb = fc.oneof(
      { weight: 4, arbitrary: fc.constantFrom<unknown>('simulate', ...(realPoisonPossible ? [] : ['madvise', 'auto']), 'SIMULATE', '', undefined) },
      wrongType,
    );
    const optsArb = fc.oneof(
      { weight: 1, arbitrary: fc.constantFrom<unknown>(null, 'simulate', 5, []) },
      {
        weight: 8,
        arbitrary: fc.record(
          {
            mode: modeArb,
            kind: fc.oneof(fc.constantFrom<unknown>('AR', 'AO', 'ar', 'XX'), wrongType),
            signal: fc.oneof(fc.boolean(), wrongType),
          },
          { requiredKeys: [] },
        ),
      },
    );
    const arb = fc.record({
      which: fc.constantFrom('target', 'target', 'target', 'foreign', 'unmapped', 'dead', 'fake'),
      fake: fc.nat({ max: fx.fakes.length - 1 }),
      offset: offsetsIn(size),
      options: optsArb,
    });
    await fc.assert(
      fc.asyncProperty(arb, async ({ which, fake, offset, options }) => {
        let opts = options as Record<string, unknown> | undefined;
        if (realPoisonPossible && opts && typeof opts === 'object' && (opts.mode === undefined || opts.mode === 'auto' || opts.mode === 'madvise'))
          opts = { ...opts, mode: 'simulate' };
        const region = { target, foreign: fx.foreign, unmapped: fx.unmapped, dead: fx.deadRegion, fake: fx.fakes[fake] }[which];
        await fx.engine.whenIdle();
        const before = world(fx);
        const what = `injectPoison(${which}, ${show(offset)}, ${show(opts)})`;
        const out = await attempt(() => fx.engine.injectPoison(region as Region, offset as number, opts as never));
        if (!out.ok) return expectCleanFailure(fx, out.error, before, what);
        expect(region, `${what}: poisoned a region that is not the engine's`).toBe(target);
        expect(Number.isSafeInteger(offset) && (offset as number) >= 0 && (offset as number) < size, `${what}: accepted the offset`).toBe(true);
        expect(out.value.mode, what).toBe('simulate');
        expect(out.value.hostAddress, what).toBe(target.address + BigInt((offset as number) & ~(SUB - 1)));
        await fx.engine.whenIdle();
        const o = opts ?? {};
        if (o.signal !== false) {
          const hit = fx.engine.lostPages().some((l) => l.region === 'inj' && (offset as number) >= l.offset && (offset as number) < l.offset + l.size);
          expect(hit, `${what}: the poison is not in lostPages()`).toBe(true);
        }
        expectCanaries(fx, what);
      }),
      params(200),
    );
  });

  it('startVcpuLoad(engine, options)', async () => {
    const fx = fixture();
    const size = 4 * MiB;
    const target = fx.engine.mapRegion({ name: 'vcpu', path: hugeFile('vcpu'), size, guestPhysAddr: 1n << 35n });
    fillPattern(target, 21);
    const windowArb = fc.oneof(
      { weight: 3, arbitrary: fc.constantFrom<unknown>(undefined, { offset: 0, length: 4096 }, { offset: size - 4096, length: 4096 }, { offset: 1, length: 4096 }, { offset: 4095, length: 8191 }) },
      {
        weight: 3,
        arbitrary: fc.oneof(
          fc.constantFrom<unknown>({ offset: 0, length: 4095 }, { offset: size, length: 0 }, { offset: 4096, length: size }, null, 5, {}, { offset: '0', length: 4096 }),
          fc.record({ offset: offsetsIn(size), length: fc.oneof(fc.constantFrom<unknown>(4096, size, size + 1), hostile) }),
        ),
      },
    );
    const arb = fc.record({
      // Regions of another engine or of nobody: see the explicit child-process tests below.
      which: fc.constantFrom('target', 'target', 'target', 'unmapped', 'dead', 'fake'),
      fake: fc.nat({ max: fx.fakes.length - 1 }),
      threads: fc.oneof({ weight: 3, arbitrary: fc.constantFrom<unknown>(1, 2, 3) }, fc.constantFrom<unknown>(0, 65, -1, 1.5, 64), hostile),
      seed: fc.oneof({ weight: 3, arbitrary: fc.constantFrom<unknown>(21) }, fc.constantFrom<unknown>(22, 0), hostile),
      writeRatio: fc.oneof({ weight: 3, arbitrary: fc.constantFrom<unknown>(undefined, 0, 0.25, 1) }, fc.constantFrom<unknown>(-0.1, 1.1, '0.5'), hostile),
      window: windowArb,
      asObject: fc.oneof({ weight: 9, arbitrary: fc.constant(true) }, fc.constant(false)),
    });
    await fc.assert(
      fc.asyncProperty(arb, async ({ which, fake, asObject, ...o }) => {
        const region = { target, unmapped: fx.unmapped, dead: fx.deadRegion, fake: fx.fakes[fake] }[which];
        const opts: unknown = asObject ? { ...o, region } : o.threads;
        if (asObject && o.window === undefined) delete (opts as { window?: unknown }).window;
        if (asObject && o.writeRatio === undefined) delete (opts as { writeRatio?: unknown }).writeRatio;
        const before = world(fx);
        const what = `startVcpuLoad(engine, ${show({ ...(asObject ? o : { opts }), region: which })})`;
        const out = await attempt(() => startVcpuLoad(fx.engine, opts as VcpuLoadOptions));
        if (!out.ok) {
          expectCleanFailure(fx, out.error, before, what);
          expect(verifyPattern(target, 21).wrongBytes, `${what}: the target changed`).toBe(0);
          return;
        }
        const report = await out.value.stop();
        expect(region, what).toBe(target);
        expect(Number.isSafeInteger(o.threads) && (o.threads as number) >= 1 && (o.threads as number) <= 64, `${what}: accepted threads`).toBe(true);
        expect(report.mceReports, what).toEqual([]);
        if (o.seed === 21) expect(report.wrongBytes, `${what}: wrong bytes read`).toBe(0);
        else fillPattern(target, 21);
        expect(world(fx), what).toEqual(before);
        expectCanaries(fx, what);
      }),
      params(150),
    );
  });

  it('engine.resetRegion / unmapRegion / hugeMappedShare with foreign, closed, fake and live regions', async () => {
    const fx = fixture();
    let n = 0;
    const arb = fc.record({
      method: fc.constantFrom('resetRegion', 'unmapRegion', 'hugeMappedShare'),
      which: fc.constantFrom('foreign', 'unmapped', 'dead', 'fake', 'fake', 'fresh', 'sick', 'canary'),
      fake: fc.nat({ max: fx.fakes.length - 1 }),
      index: fc.oneof(fc.constantFrom<unknown>(0, 1, 2), hostile),
    });
    await fc.assert(
      fc.asyncProperty(arb, async ({ method, which, fake, index }) => {
        if (method === 'unmapRegion' && which === 'canary') return; // it would work: the canary is needed
        let live: Region | undefined;
        if (which === 'fresh' || which === 'sick') {
          live = fx.engine.mapRegion({ name: `live${n++}`, path: hugeFile('live'), size: 4 * MiB, guestPhysAddr: 1n << 36n });
          fillPattern(live, 31);
          if (which === 'sick') {
            fx.engine.injectPoison(live, 0x7000, { mode: 'simulate' });
            fx.engine.injectPoison(live, 2 * MiB + 5, { mode: 'simulate', kind: 'AO' });
            await fx.engine.whenIdle();
          }
        }
        const region = { foreign: fx.foreign, unmapped: fx.unmapped, dead: fx.deadRegion, fake: fx.fakes[fake], canary: fx.canary, fresh: live, sick: live }[which] as Region;
        const before = world(fx);
        const what = `${method}(${which}${method === 'hugeMappedShare' ? `, ${show(index)}` : ''})`;
        try {
          const out = await attempt(() =>
            method === 'resetRegion'
              ? fx.engine.resetRegion(region)
              : method === 'unmapRegion'
                ? fx.engine.unmapRegion(region)
                : fx.engine.hugeMappedShare(region, index as number),
          );
          if (!out.ok) {
            expectCleanFailure(fx, out.error, before, what);
            expect(['fresh', 'sick', 'canary'].includes(which) && method !== 'hugeMappedShare', `${what}: refused a live region`).toBe(false);
            return;
          }
          if (method === 'unmapRegion') live = undefined;
          expect(['fresh', 'sick', 'canary'], `${what}: accepted a region that is not the engine's`).toContain(which);
          if (method === 'unmapRegion') {
            const file = path.resolve(region.path);
            expect(fs.readFileSync('/proc/self/maps', 'utf8').split('\n').filter((l) => l.includes(file)), `${what}: still mapped`).toEqual([]);
            expect(() => region.read(0, 1), what).toThrow(expect.objectContaining({ code: 'ERR_REGION_CLOSED' }));
          } else if (method === 'resetRegion') {
            const ev = out.value as { restoredHugePages: number };
            expect(ev.restoredHugePages, what).toBe(which === 'sick' ? 2 : 0);
            expect(fx.engine.lostPages().filter((l) => l.region === region.name), what).toEqual([]);
            expect(region.read(0x7000, 8).length, what).toBe(8);
          } else {
            expect(typeof out.value, what).toBe('number');
          }
          expectCanaries(fx, what);
        } finally {
          if (live) {
            fx.engine.unmapRegion(live);
          }
          for (const f of fs.readdirSync(DIR_2M)) if (f.startsWith(`${PREFIX}live-`)) fs.rmSync(path.join(DIR_2M, f), { force: true });
        }
      }),
      params(100),
    );
  });

  it('the other entry points: whenIdle, fillPattern, verifyPattern, pause/resume, stats', async () => {
    const fx = fixture();
    const arb = fc.record({
      call: fc.constantFrom('whenIdle', 'fillPattern', 'verifyPattern', 'pauseResume', 'stats'),
      region: fc.oneof(fc.constantFrom<unknown>('canary', 'unmapped', 'dead'), fc.constantFrom(...fx.fakes.map((_, i) => i))),
      arg: fc.oneof(fc.constantFrom<unknown>(undefined, {}, { timeoutMs: 0 }, { timeoutMs: 50 }, CANARY_SEED), hostile, fc.record({ timeoutMs: hostile })),
    });
    await fc.assert(
      fc.asyncProperty(arb, async ({ call, region: which, arg }) => {
        const region = (typeof which === 'number' ? fx.fakes[which] : { canary: fx.canary, unmapped: fx.unmapped, dead: fx.deadRegion }[which as string]) as Region;
        const before = world(fx);
        const what = `${call}(${call === 'whenIdle' || call === 'stats' || call === 'pauseResume' ? '' : `${String(typeof which === 'number' ? `fake#${which}` : which)}, `}${show(arg)})`;
        const out = await attempt(async () => {
          switch (call) {
            case 'whenIdle':
              return fx.engine.whenIdle(arg as never);
            case 'fillPattern':
              // Only the canary's own seed may be written over the canary.
              return fillPattern(region, region === fx.canary ? CANARY_SEED : (arg as number));
            case 'verifyPattern':
              return verifyPattern(region, arg as number);
            case 'pauseResume':
              fx.engine.pause();
              fx.engine.resume();
              return undefined;
            default:
              return fx.engine.stats();
          }
        });
        if (!out.ok) return expectCleanFailure(fx, out.error, before, what);
        expect(world(fx), what).toEqual(before);
        expectCanaries(fx, what);
      }),
      params(150),
    );
  });

  it('a closed engine refuses every call with ERR_ENGINE_CLOSED / ERR_REGION_CLOSED and changes nothing', async () => {
    const fx = fixture();
    const dead = fx.dead;
    const deadRegion = fx.deadRegion;
    const arb = fc.record({
      call: fc.constantFrom(
        'mapRegion', 'unmapRegion', 'injectPoison', 'pause', 'resume', 'resetRegion', 'stats', 'hugeMappedShare',
        'read', 'write', 'fillPattern', 'verifyPattern', 'startVcpuLoad', 'close', 'whenIdle', 'lostPages',
      ),
      valid: fc.boolean(),
      a: hostile,
      b: hostile,
    });
    await fc.assert(
      fc.asyncProperty(arb, async ({ call, valid, a, b }) => {
        const file = hugeFile('closed');
        const before = world(fx);
        const what = `closed engine: ${call}(${valid ? 'valid arguments' : `${show(a)}, ${show(b)}`})`;
        const out = await attempt<unknown>(() => {
          switch (call) {
            case 'mapRegion':
              return dead.mapRegion((valid ? { name: 'again', path: file, size: 2 * MiB, guestPhysAddr: 1n << 37n } : a) as never);
            case 'unmapRegion':
              return dead.unmapRegion((valid ? deadRegion : a) as never);
            case 'injectPoison':
              return dead.injectPoison((valid ? deadRegion : a) as never, (valid ? 0 : b) as never, { mode: 'simulate' });
            case 'pause':
              return dead.pause();
            case 'resume':
              return dead.resume();
            case 'resetRegion':
              return dead.resetRegion((valid ? deadRegion : a) as never);
            case 'stats':
              return dead.stats();
            case 'hugeMappedShare':
              return dead.hugeMappedShare(deadRegion, (valid ? 0 : a) as never);
            case 'read':
              return deadRegion.read((valid ? 0 : a) as never, (valid ? 8 : b) as never);
            case 'write':
              return deadRegion.write((valid ? 0 : a) as never, (valid ? Buffer.alloc(8) : b) as never);
            case 'fillPattern':
              return fillPattern(deadRegion, (valid ? 1 : a) as never);
            case 'verifyPattern':
              return verifyPattern(deadRegion, (valid ? 1 : a) as never);
            case 'startVcpuLoad':
              return startVcpuLoad(dead, { region: deadRegion, threads: valid ? 1 : (a as number), seed: 1 });
            case 'close':
              return dead.close();
            case 'whenIdle':
              return dead.whenIdle();
            default:
              return dead.lostPages();
          }
        });
        expect(fs.existsSync(file), `${what}: created ${file}`).toBe(false);
        if (['close', 'whenIdle', 'lostPages'].includes(call)) {
          expect(out.ok, what).toBe(true);
          if (call === 'lostPages') expect(out.ok && out.value, what).toEqual([]);
          expect(world(fx), what).toEqual(before);
          return;
        }
        expect(out.ok, `${what}: succeeded`).toBe(false);
        expectCleanFailure(fx, !out.ok && out.error, before, what);
        if (valid) expect((!out.ok && (out.error as { code: string }).code) as string, what).toMatch(/^ERR_(ENGINE|REGION)_CLOSED$/);
      }),
      params(150),
    );
  });
});

/** Puts the pattern back on everything of a region that is still readable (fillPattern stops at lost memory). */
function fillPatternAround(region: Region, seed: number): void {
  try {
    fillPattern(region, seed);
  } catch {
    /* stopped at the lost subpage: only the part before it was written, which is all a test changed */
  }
}

// --- explicit cases ---------------------------------------------------------------------------------

describe('fuzz: files that change under a live region, double close', () => {
  it('a file truncated under a live region: guarded access throws ERR_MEMORY_FAULT, no crash, nothing else changes', async () => {
    const fx = fixture();
    const p = hugeFile('trunc');
    const region = fx.engine.mapRegion({ name: 'trunc', path: p, size: 4 * MiB, guestPhysAddr: 1n << 32n });
    fillPattern(region, 41);
    fs.truncateSync(p, 2 * MiB);
    expect(region.read(0, 64).length).toBe(64); // the part still in the file
    for (const f of [() => region.read(2 * MiB, 8), () => region.read(2 * MiB - 4, 8), () => region.write(3 * MiB, Buffer.alloc(16)), () => fillPattern(region, 41)]) {
      expect(f).toThrow(expect.objectContaining({ code: 'ERR_MEMORY_FAULT', region: 'trunc' }));
    }
    const v = verifyPattern(region, 41);
    expect(v.wrongBytes).toBe(0);
    expect(v.unreadableOffsets[0]).toBe(2 * MiB);
    expect(fx.engine.lostPages()).toEqual([]);
    // A poison in the part that is gone: nothing to read back, the huge page is refused; no crash.
    fx.engine.injectPoison(region, 2 * MiB + 0x1000, { mode: 'simulate' });
    await fx.engine.whenIdle();
    expect(fx.engine.lostPages().map((l) => [l.region, l.offset, l.size, l.reason])).toEqual([['trunc', 2 * MiB, 2 * MiB, 'read-back-failed']]);
    expect(() => region.read(2 * MiB, 8)).toThrow(expect.objectContaining({ code: 'ERR_POISONED' }));
    expectCanaries(fx, 'truncated file');
  });

  it('the backing file deleted under a live region: read/write keep working, poison recovers, reset works', async () => {
    const fx = fixture();
    const p = hugeFile('deleted');
    const region = fx.engine.mapRegion({ name: 'deleted', path: p, size: 4 * MiB, guestPhysAddr: 1n << 32n });
    fillPattern(region, 42);
    const page0 = region.read(0, 2 * MiB);
    fs.rmSync(p);
    expect(fs.existsSync(p)).toBe(false);
    const before = region.read(0x1000, 64);
    region.write(0x1000, Buffer.alloc(64, 0xab));
    expect(region.read(0x1000, 64).equals(Buffer.alloc(64, 0xab))).toBe(true);
    region.write(0x1000, before);
    expect(verifyPattern(region, 42).wrongBytes).toBe(0);
    const recovered: unknown[] = [];
    fx.engine.on('recovered', (e) => recovered.push(e));
    fx.engine.injectPoison(region, 2 * MiB + 0x2345, { mode: 'simulate' });
    await fx.engine.whenIdle();
    expect(recovered).toHaveLength(1);
    expect(fx.engine.lostPages().map((l) => [l.offset, l.size])).toEqual([[2 * MiB + 0x2000, SUB]]);
    const v = verifyPattern(region, 42);
    expect(v.wrongBytes).toBe(0);
    expect(v.unreadableOffsets).toEqual([2 * MiB + 0x2000]);
    expect(() => region.read(2 * MiB + 0x2000, 1)).toThrow(expect.objectContaining({ code: 'ERR_POISONED' }));
    region.write(2 * MiB, Buffer.alloc(16, 1)); // the healthy rest of the split page is writable
    const ev = await fx.engine.resetRegion(region);
    expect(ev).toMatchObject({ restoredHugePages: 1, stillSplit: 0 });
    expect(fx.engine.lostPages()).toEqual([]);
    expect(region.read(2 * MiB + 0x2000, 8).length).toBe(8);
    region.write(2 * MiB + 0x2000, Buffer.alloc(8, 7));
    expect(region.read(2 * MiB + 0x2000, 8).equals(Buffer.alloc(8, 7))).toBe(true);
    expect(region.read(0, 2 * MiB).equals(page0)).toBe(true); // the huge page without poison kept its data
    expectCanaries(fx, 'deleted file');
  });

  it('double close: idempotent, unmaps everything once, leaves another engine working', async () => {
    const mapsBefore = hugeMaps();
    const a = RasEngine.open({ reserveBytes: 0 });
    const b = openEngine();
    const ra = a.mapRegion({ name: 'a', path: hugeFile('dc-a'), size: 2 * MiB });
    const rb = b.mapRegion({ name: 'b', path: hugeFile('dc-b'), size: 2 * MiB });
    fillPattern(rb, 51);
    expect(hugeMaps()).toBe(mapsBefore + 2);
    expect(a.close()).toBeUndefined();
    expect(a.close()).toBeUndefined();
    expect(a.isClosed).toBe(true);
    expect(hugeMaps()).toBe(mapsBefore + 1);
    expect(() => ra.read(0, 1)).toThrow(expect.objectContaining({ code: 'ERR_REGION_CLOSED' }));
    expect(() => a.stats()).toThrow(expect.objectContaining({ code: 'ERR_ENGINE_CLOSED' }));
    // The second close must not have taken the shared native worker or handlers away from b.
    b.injectPoison(rb, 0x3000, { mode: 'simulate' });
    await b.whenIdle({ timeoutMs: 10_000 });
    expect(b.lostPages().map((l) => l.offset)).toEqual([0x3000]);
    expect(verifyPattern(rb, 51).wrongBytes).toBe(0);
    b.close();
    b.close();
    expect(hugeMaps()).toBe(mapsBefore);
    // And a new engine opens and works after all of that.
    const c = openEngine();
    const rc = c.mapRegion({ name: 'c', path: hugeFile('dc-c'), size: 2 * MiB });
    c.injectPoison(rc, 0, { mode: 'simulate' });
    await c.whenIdle({ timeoutMs: 10_000 });
    expect(c.lostPages()).toHaveLength(1);
  });
});

// --- engine bugs found by the fuzzing: each a minimal reproduction ---------------------------------------

/** Runs a script in a child with an address-space limit, so a runaway allocation fails instead of OOM-killing. */
function runLimited(script: string, limitKb: number, env: Record<string, string> = {}) {
  const r = spawnSync('bash', ['-c', `ulimit -v ${limitKb} && exec "${process.execPath}" -e "$SCRIPT"`], {
    cwd: path.resolve(__dirname, '..'),
    env: { ...process.env, ...env, SCRIPT: script },
    encoding: 'utf8',
    timeout: 60_000,
  });
  return { status: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr };
}

// Found by this file against ca1b10e (fixed in f12f17b): kept as regression tests.
describe('fuzz findings (those that crashed run in a child process)', () => {
  it('a hard link to a mapped file is the same file: mapping its range again is ERR_REGION_OVERLAP', async () => {
    const engine = openEngine();
    const p = hugeFile('hl');
    const q = hugeFile('hl-link');
    const a = engine.mapRegion({ name: 'a', path: p, size: 2 * MiB });
    fs.linkSync(p, q);
    let b: Region | undefined;
    try {
      b = engine.mapRegion({ name: 'b', path: q, size: 2 * MiB, guestPhysAddr: 1n << 32n });
    } catch (e) {
      expect(e).toMatchObject({ code: 'ERR_REGION_OVERLAP' });
      return;
    }
    // Accepted: then the two mappings must never diverge. Today a recovery of `a` (a private copy)
    // makes them diverge silently, exactly what share=on regions are refused for.
    a.write(0, Buffer.from('hello'));
    engine.injectPoison(a, 0x2000, { mode: 'simulate' });
    await engine.whenIdle();
    try {
      a.write(0, Buffer.from('HELLO'));
    } catch (e) {
      expect(e).toMatchObject({ code: 'ERR_POISONED' }); // refused (whole huge page lost): no divergence
      return;
    }
    expect(b.read(0, 5).toString(), 'one file mapped twice: the recovered region diverged from the other').toBe('HELLO');
  });

  it('a failed mapRegion leaves an existing file as it was (no ftruncate to the requested size)', () => {
    const engine = openEngine();
    const p = hugeFile('grow');
    fs.writeFileSync(p, '');
    fs.truncateSync(p, 2 * MiB);
    expect(() => engine.mapRegion({ name: 'big', path: p, size: 2 ** 40 })).toThrow(expect.objectContaining({ code: 'ENOMEM', syscall: 'mmap' }));
    expect(fs.statSync(p).size).toBe(2 * MiB);
  });

  it('unmapRegion while a vCPU load runs on the region: no crash', () => {
    const r = runChild(`
      const { RasEngine, startVcpuLoad, fillPattern } = ${pkg};
      const e = RasEngine.open({ reserveBytes: 0 });
      const region = e.mapRegion({ name: 'a', path: process.env.F, size: 2 << 20 });
      fillPattern(region, 1);
      const load = startVcpuLoad(e, { region, threads: 2, seed: 1 });
      setTimeout(async () => {
        try { e.unmapRegion(region); console.log('unmapped'); } catch (x) { console.log('refused', x.code); }
        setTimeout(async () => { await load.stop().catch(() => {}); e.close(); console.log('survived'); }, 200);
      }, 100);
    `, { F: hugeFile('unmap-load') });
    expect({ signal: r.signal, stdout: r.stdout.trim().split('\n').pop() }).toEqual({ signal: null, stdout: 'survived' });
  });

  it('close() while paused with a vCPU load running: no crash', () => {
    const r = runChild(`
      const { RasEngine, startVcpuLoad, fillPattern } = ${pkg};
      const e = RasEngine.open({ reserveBytes: 0 });
      const region = e.mapRegion({ name: 'a', path: process.env.F, size: 2 << 20 });
      fillPattern(region, 1);
      startVcpuLoad(e, { region, threads: 2, seed: 1 });
      e.pause();
      setTimeout(() => { e.close(); setTimeout(() => console.log('survived'), 300); }, 100);
    `, { F: hugeFile('paused-close') });
    expect({ signal: r.signal, stdout: r.stdout.trim() }).toEqual({ signal: null, stdout: 'survived' });
  });

  it('startVcpuLoad refuses a region of another engine (else closing that engine kills the process)', () => {
    const r = runChild(`
      const { RasEngine, startVcpuLoad, fillPattern } = ${pkg};
      const a = RasEngine.open({ reserveBytes: 0 });
      const b = RasEngine.open({ reserveBytes: 0 });
      const region = b.mapRegion({ name: 'a', path: process.env.F, size: 2 << 20 });
      fillPattern(region, 1);
      try { startVcpuLoad(a, { region, threads: 2, seed: 1 }); console.log('accepted'); } catch (x) { console.log('refused ' + x.code); }
      setTimeout(() => { b.close(); setTimeout(() => { a.close(); console.log('survived'); }, 300); }, 100);
    `, { F: hugeFile('foreign-load') });
    expect({ signal: r.signal, stdout: r.stdout.trim() }).toEqual({ signal: null, stdout: expect.stringMatching(/^refused ERR_[A-Z_]+\nsurvived$/) });
  });

  it('startVcpuLoad on a closed engine, or with something that is not an engine, starts no threads', () => {
    for (const engineExpr of ['closed', 'undefined', '({})']) {
      const r = runChild(`
        const { RasEngine, startVcpuLoad, fillPattern } = ${pkg};
        const owner = RasEngine.open({ reserveBytes: 0 });
        const closed = RasEngine.open({ reserveBytes: 0 }); closed.close();
        const region = owner.mapRegion({ name: 'a', path: process.env.F, size: 2 << 20 });
        fillPattern(region, 1);
        try { startVcpuLoad(${engineExpr}, { region, threads: 2, seed: 1 }); console.log('accepted'); }
        catch (x) { console.log(x.code ? 'refused ' + x.code : 'uncoded ' + x.constructor.name); }
        setTimeout(() => { owner.close(); setTimeout(() => console.log('survived'), 300); }, 100);
      `, { F: hugeFile('not-engine') });
      expect({ engine: engineExpr, signal: r.signal, stdout: r.stdout.trim() }).toEqual({
        engine: engineExpr,
        signal: null,
        stdout: expect.stringMatching(/^refused ERR_[A-Z_]+\nsurvived$/),
      });
    }
  });

  it('vCPU loads cannot take every thread slot: the limit is a coded error, guarded access keeps working', () => {
    // The vCPUs all wait on a poisoned huge page of a paused engine (futex, no CPU) while holding
    // their thread slots. Before the fix, threads past the 256th slot silently did nothing, and the
    // JS thread, left without a slot, got a bogus fault from read(), an all-zero "clean" result from
    // verifyPattern() and a null-pointer crash from fillPattern().
    const r = runChild(`
      const { RasEngine, startVcpuLoad, fillPattern, verifyPattern } = ${pkg};
      const e = RasEngine.open({ reserveBytes: 0 });
      const region = e.mapRegion({ name: 'a', path: process.env.F, size: 4 << 20 });
      fillPattern(region, 1);
      e.pause();
      e.injectPoison(region, 0, { mode: 'simulate' });
      const loads = [];
      let refused = null;
      for (let i = 0; i < 20 && !refused; i++) {
        try { loads.push(startVcpuLoad(e, { region, threads: 64, seed: 1, window: { offset: 0, length: 4096 } })); }
        catch (x) { refused = x.code || 'uncoded ' + x.constructor.name; }
      }
      setTimeout(async () => {
        const out = { loads: loads.length, refused };
        try { region.read(2 << 20, 8); out.read = 'ok'; } catch (x) { out.read = x.code + ': ' + x.message; }
        try { const v = verifyPattern(region, 2); out.verifyWrongSeed = v.checkedBytes + ' checked, ' + v.wrongBytes + ' wrong'; }
        catch (x) { out.verifyWrongSeed = x.code; }
        try { fillPattern(region, 1); out.fill = 'ok'; } catch (x) { out.fill = x.code; }
        console.log(JSON.stringify(out));
        for (const l of loads) await l.stop(); // while still paused: the waiting vCPUs must be released
        e.resume();
        e.close();
        console.log('survived');
      }, 300);
    `, { F: hugeFile('slots') });
    expect(r.signal, `the process died: ${r.stdout}`).toBeNull();
    const out = JSON.parse(r.stdout.split('\n')[0]) as { loads: number; refused: string | null; read: string; verifyWrongSeed: string };
    expect(out.refused, `no limit on vCPU threads (${out.loads} loads of 64 accepted)`).toMatch(/^ERR_[A-Z_]+$/);
    expect(out.read, 'read with the vCPU slots all taken').toBe('ok');
    expect(out.verifyWrongSeed, 'verifyPattern with the vCPU slots all taken').toMatch(/^2097152 checked, [1-9]\d* wrong$/);
    expect(r.stdout).toContain('survived');
  });

  // Under AddressSanitizer (scripts/check-asan.sh) the child cannot start with an address-space
  // limit: ASan reserves terabytes of shadow memory.
  const underAsan = /libasan/.test(process.env.LD_PRELOAD ?? '');
  it.skipIf(underAsan)("reserveBytes beyond the machine's memory is refused (it would be pre-faulted: OOM)", () => {
    // An address-space limit makes the reserve's mmap fail here instead of pre-faulting 32 TiB.
    const r = runLimited(
      `
      const { RasEngine } = ${pkg};
      try {
        const e = RasEngine.open({ reserveBytes: 2 ** 45 });
        setTimeout(() => { const s = e.stats(); e.close(); console.log('accepted target=' + s.reserveTarget + ' have=' + s.reserveBytes); }, 200);
      } catch (x) { console.log('refused ' + x.code); }
    `,
      8 * 1024 * 1024,
    );
    expect(r.signal).toBeNull();
    expect(r.stdout.trim(), `total memory ${os.totalmem()}`).toMatch(/^refused ERR_[A-Z_]+$/);
  });
});
