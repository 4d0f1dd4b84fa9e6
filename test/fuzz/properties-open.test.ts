// Fuzz properties: RasEngine.open and mapRegion. (Harness and generators: harness.ts, generators.ts.)
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { RasEngine } from '../../src/index';
import { DIR_1G, DIR_2M, hugeFile, MiB } from '../helpers';
import { bigValid, harmlessString, hostile, oddNumber, wrongType, wrongTypeNotString } from './generators';
import {
  attempt,
  expectCanaries,
  expectCleanFailure,
  fixture,
  hugeMaps,
  params,
  scratchPaths,
  show,
  world,
} from './harness';

describe('fuzz: hostile arguments get a coded error and change nothing', () => {
  const extra = scratchPaths();

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

});
