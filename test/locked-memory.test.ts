// Issue 19, defects 2 and 18: locked guest RAM, MADV_DONTDUMP and a NUMA policy. The replacement of
// a recovered huge page keeps them (VmFlags lo, dd, dc; numa_maps' policy), on the lazy and the eager
// path, from the reserve and fresh, and the fresh huge page of a reset keeps them too. A process
// under mlockall(MCL_FUTURE) (QEMU's mem-lock=on) never reads zeros where data was.
import * as fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import type { RasEngine, RecoveredEvent, Region } from '../src/index';
import { native } from '../src/native';
import { fillPattern, verifyPattern } from '../src/testing';
import { hugeFile, MiB, openEngine, PKG, runChild, SUB, TESTING } from './helpers';
import { until } from './helpers/time';

const t = native as unknown as {
  testMadvise(addr: bigint, len: number, advice: number): number;
  testMbind(addr: bigint, len: number, mode: number, nodes: number[]): number;
  testMunlock(addr: bigint, len: number): number;
};
const MADV_DONTDUMP = 16;
const MPOL_BIND = 2;
const lazy = native.lazyInfo();

/** VmFlags of every VMA overlapping [addr, addr+len), and the numa_maps policy of each. */
function vmas(addr: bigint, len: number): { start: bigint; flags: string[]; policy: string }[] {
  const out: { start: bigint; flags: string[]; policy: string }[] = [];
  let cur: { start: bigint; flags: string[]; policy: string } | undefined;
  for (const line of fs.readFileSync('/proc/self/smaps', 'utf8').split('\n')) {
    const m = /^([0-9a-f]+)-([0-9a-f]+) /.exec(line);
    if (m) {
      const s = BigInt('0x' + m[1]);
      cur = s < addr + BigInt(len) && BigInt('0x' + m[2]) > addr ? { start: s, flags: [], policy: '' } : undefined;
      if (cur) out.push(cur);
    } else if (cur && line.startsWith('VmFlags:')) cur.flags = line.slice(8).trim().split(/\s+/);
  }
  const numa = fs.readFileSync('/proc/self/numa_maps', 'utf8').split('\n');
  for (const v of out) v.policy = numa.find((l) => l.startsWith(v.start.toString(16) + ' '))?.split(' ')[1] ?? '';
  return out;
}

async function recover(engine: RasEngine, region: Region, off: number, seed: number): Promise<RecoveredEvent> {
  const got: RecoveredEvent[] = [];
  engine.on('recovered', (e) => got.push(e));
  engine.injectPoison(region, off, { mode: 'simulate', kind: 'AR' });
  await until(() => got.length > 0, 30_000);
  await engine.whenIdle({ timeoutMs: 30_000 });
  const check = verifyPattern(region, seed);
  expect(check.wrongBytes).toBe(0);
  expect(check.unreadableOffsets).toEqual([off - (off % SUB)]);
  return got[0];
}

/** The recovered huge page [2 MiB, 4 MiB) of `region`: every VMA has `want` and the region's policy. */
async function expectKept(region: Region, want: string[], policy: string) {
  const page = region.address + BigInt(2 * MiB);
  // MADV_DONTDUMP is read from smaps off the recovery's path: on a region's first recovery it may
  // follow the swap by a few milliseconds.
  await until(() => vmas(page, 2 * MiB).every((v) => want.every((f) => v.flags.includes(f))), 5_000);
  const got = vmas(page, 2 * MiB);
  expect(got.length).toBeGreaterThan(0);
  for (const v of got) {
    expect(v.flags).not.toContain('ht'); // the replacement, not the huge page
    for (const f of want) expect(v.flags).toContain(f);
    expect(v.policy).toBe(policy);
  }
}

describe('the replacement keeps the memory\'s properties', () => {
  for (const [what, opts] of [
    ['lazy, from the reserve', { lazy: true, reserve: true, lock: undefined }],
    ['eager, fresh block', { lazy: false, reserve: false, lock: undefined }],
    ['locked (lockMemory on), from the reserve', { lazy: true, reserve: true, lock: 'on' }],
    ['locked (lockMemory on-fault), fresh block', { lazy: true, reserve: false, lock: 'on-fault' }],
  ] as const) {
    it.skipIf(opts.lazy && !lazy.available)(`${what}: dd, dc, the lock and MPOL_BIND as they were, every byte right`, { timeout: 60_000 }, async () => {
      const engine = openEngine({ reserveBytes: opts.reserve ? 'auto' : 0, lostPageGuard: 'uffd', lazyRecovery: opts.lazy });
      const region = engine.mapRegion({ name: 'props', path: hugeFile('props'), size: 4 * MiB });
      expect(t.testMbind(region.address, region.size, MPOL_BIND, [0])).toBe(0);
      expect(t.testMadvise(region.address, region.size, MADV_DONTDUMP)).toBe(0);
      if (opts.lock) region.lockMemory(opts.lock);
      fillPattern(region, 51);
      if (opts.reserve) await until(() => engine.stats().reserveBytes >= engine.stats().reserveTarget, 30_000);
      const before = engine.stats().recovery;
      try {
        const ev = await recover(engine, region, 2 * MiB + 77 * SUB + 5, 51);
        expect(ev.usedReserve).toBe(opts.reserve);
        // Locked memory takes the eager path, and stats() says why.
        expect(ev.path).toBe(opts.lazy && !opts.lock ? 'lazy' : 'eager');
        if (opts.lock && opts.lazy) {
          expect(engine.stats().recovery.lockedEager).toBe(before.lockedEager + 1);
          expect(engine.stats().recovery.lazyUnavailable).toMatch(/locked memory/);
        }
        await expectKept(region, opts.lock ? ['dd', 'dc', 'lo'] : ['dd', 'dc'], 'bind:0');
        if (!opts.lock) for (const v of vmas(region.address + BigInt(2 * MiB), 2 * MiB)) expect(v.flags).not.toContain('lo');
        expect(engine.stats().memory.lockFailures).toBe(0);
        // A reset's fresh huge page keeps the policy and dd too.
        expect(await engine.resetRegion(region)).toMatchObject({ restoredHugePages: 1 });
        const back = vmas(region.address + BigInt(2 * MiB), 2 * MiB);
        for (const v of back) {
          expect(v.flags).toContain('ht');
          expect(v.flags).toContain('dd');
          expect(v.policy).toBe('bind:0');
        }
      } finally {
        t.testMunlock(region.address, region.size);
      }
    });
  }
});

// mlockall in a child: Node itself does not live long under it (KERNEL-FACTS), so the child is short.
describe('a process under mlockall (QEMU -overcommit mem-lock=on / on-fault)', () => {
  const script = `
    const { RasEngine } = ${PKG};
    const { fillPattern, verifyPattern } = ${TESTING};
    const { native } = require('./dist/src/native.js');
    const fs = require('node:fs');
    const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
    (async () => {
      const e = RasEngine.open({ reserveBytes: 'auto', lostPageGuard: 'uffd' });
      const r = e.mapRegion({ name: 'mla', path: process.env.FILE, size: 4 << 20 });
      fillPattern(r, 61);
      for (let i = 0; i < 2000 && e.stats().reserveBytes < e.stats().reserveTarget; i++) await sleep(5);
      const got = [];
      e.on('recovered', (ev) => got.push(ev));
      const rc = native.testMlockall(Number(process.env.FLAGS));
      const off = (2 << 20) + 37 * 4096;
      e.injectPoison(r, off, { mode: 'simulate', kind: 'AR' });
      for (let i = 0; i < 2000 && got.length === 0; i++) await sleep(2);
      await e.whenIdle({ timeoutMs: 10000 });
      const check = verifyPattern(r, 61);
      const st = e.stats();
      const page = r.address + (2n << 20n);
      const flags = [];
      let inside = false;
      for (const line of fs.readFileSync('/proc/self/smaps', 'utf8').split('\\n')) {
        const m = /^([0-9a-f]+)-([0-9a-f]+) /.exec(line);
        if (m) inside = BigInt('0x' + m[1]) < page + (2n << 20n) && BigInt('0x' + m[2]) > page;
        else if (inside && line.startsWith('VmFlags:')) flags.push(line.slice(8).trim());
      }
      native.testMunlockall();
      console.log(JSON.stringify({ rc, path: got[0] && got[0].path, lost: got[0] ? got[0].lostGuestPhysAddrs.map(String) : null,
        wrong: check.wrongBytes, unreadable: check.unreadableOffsets, flags, recovery: st.recovery, memory: st.memory }));
      e.close();
    })().catch((err) => { native.testMunlockall(); console.log(JSON.stringify({ error: String(err && err.stack || err) })); });
  `;
  for (const [what, flags] of [
    ['MCL_CURRENT | MCL_FUTURE', 3],
    ['MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT', 7],
  ] as const) {
    // mlockall of a whole Node process needs more than the RLIMIT_MEMLOCK a plain user has (8 MiB on
    // Debian: ENOMEM): root only. A plain user's VMM locks its guest RAM with region.lockMemory.
    it.skipIf(process.getuid?.() !== 0)(`${what}: no zero where data was, the replacement locked, stats() says the lazy path stood aside`, { timeout: 90_000 }, () => {
      const file = hugeFile('mla');
      const res = runChild(script, { FILE: file, FLAGS: String(flags) });
      const line = res.stdout.trim().split('\n').pop() ?? '';
      expect(line, res.stderr).toMatch(/^\{/);
      const out = JSON.parse(line);
      expect(out.error, out.error).toBeUndefined();
      expect(out.rc).toBe(0);
      expect(out.wrong).toBe(0);
      expect(out.unreadable).toEqual([2 * MiB + 37 * SUB]);
      expect(out.lost).toEqual([String(2 * MiB + 37 * SUB)]);
      expect(out.path).toBe('eager');
      expect(out.flags.length).toBeGreaterThan(0);
      for (const f of out.flags) expect(f.split(' ')).toContain('lo');
      expect(out.memory.futureLock).toBe(flags & 4 ? 'on-fault' : 'on');
      if (lazy.available) expect(out.recovery.lazyUnavailable).toMatch(/MCL_FUTURE/);
    });
  }
});
