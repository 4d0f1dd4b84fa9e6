// The fuzz harness: property-based tests over the public API (fast-check): hostile arguments (wrong types, negative,
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
//
// This file: the fixture (canary regions, a foreign engine, unmapped and closed ones), the snapshot of
// the world a failed call must leave as it was, and the checks. generators.ts: the hostile values.
// properties-*.test.ts: one property per entry point. regressions.test.ts: what the fuzzing found.
import * as fs from 'node:fs';
import * as path from 'node:path';
import fc from 'fast-check';
import { afterEach, expect } from 'vitest';
import { RasEngine, Region, type LostPage } from '../../src/index';
import { fillPattern, verifyPattern } from '../../src/testing';
import { DIR, DIR_1G, DIR_2M, hugeFile, MiB, openEngine } from '../helpers';

export const SEED = Number(process.env.FUZZ_SEED ?? 20240611);
const SCALE = Number(process.env.FUZZ_RUNS ?? 1);
export function params(numRuns: number): fc.Parameters<unknown> {
  return { seed: SEED, numRuns: Math.max(1, Math.round(numRuns * SCALE)) };
}

export const CANARY_SEED = 0xc0ffee;
export const FOREIGN_SEED = 0xf00d;
export const PREFIX = `test-${process.pid}-`;

// --- the world a failed call must leave as it was ------------------------------------------------

/** Lines of /proc/self/maps that map a file under the hugetlbfs mount dir. */
export function hugeMaps(): number {
  return fs
    .readFileSync('/proc/self/maps', 'utf8')
    .split('\n')
    .filter((l) => l.includes(DIR)).length;
}

/** This process's test files in the mount dirs, with their sizes (a resized file is a change too). */
export function ourFiles(): string[] {
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

export interface Fx {
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

export interface World {
  maps: number;
  files: string[];
  /** The current directory: a relative path lands here. */
  cwd: string[];
  lost: LostPage[];
  otherLost: LostPage[];
}

export function world(fx: Fx): World {
  return { maps: hugeMaps(), files: ourFiles(), cwd: fs.readdirSync(process.cwd()).sort(), lost: fx.engine.lostPages(), otherLost: fx.other.lostPages() };
}

/**
 * The engine under test with a 2 MiB canary (guest physical 0, filled), a second engine with a
 * region of its own (foreign to the first, also a canary), an unmapped region and a closed engine.
 */
export function fixture(): Fx {
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

export function expectCanaries(fx: Fx, what: string): void {
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
export function expectCoded(err: unknown, what: string): asserts err is Error & { code: string } {
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

export function expectCleanFailure(fx: Fx, err: unknown, before: World, what: string): void {
  expectCoded(err, what);
  expect(world(fx), `${what}: a failed call changed something`).toEqual(before);
  expectCanaries(fx, what);
}

export type Outcome<T> = { ok: true; value: T } | { ok: false; error: unknown };
export async function attempt<T>(fn: () => T | Promise<T>): Promise<Outcome<T>> {
  try {
    return { ok: true, value: await fn() };
  } catch (error) {
    return { ok: false, error };
  }
}

export function show(v: unknown): string {
  return fc.stringify(v);
}

export function describeBytes(b: unknown): string {
  if (b instanceof Uint8Array) return `<${b.constructor.name} of ${b.length} bytes at byteOffset ${b.byteOffset}>`;
  return show(b);
}


/** Puts the pattern back on everything of a region that is still readable (fillPattern stops at lost memory). */
export function fillPatternAround(region: Region, seed: number): void {
  try {
    fillPattern(region, seed);
  } catch {
    /* stopped at the lost subpage: only the part before it was written, which is all a test changed */
  }
}


/** Paths (temporary directories, files) a property creates outside hugeFile(): removed after each test. */
export function scratchPaths(): string[] {
  const extra: string[] = [];
  afterEach(() => {
    for (const p of extra.splice(0).reverse()) fs.rmSync(p, { force: true, recursive: true });
  });
  return extra;
}
