// The machine's huge page resources a test uses: files on the hugetlbfs mounts and engines, both
// released after each test; pool and smaps readers.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterEach } from 'vitest';
import { RasEngine, type EngineOptions } from '../../src/index';

export const DIR = process.env.HUGETLB_RAS_DIR ?? '/mnt/hugetlb-ras';
export const DIR_2M = path.join(DIR, '2M');
export const DIR_1G = path.join(DIR, '1G');
export const MiB = 1 << 20;
export const GiB = 1 << 30;
export const SUB = 4096;

const created: string[] = [];
const open: RasEngine[] = [];

/** A fresh file name on the 2M (or 1G) hugetlbfs, removed after the test. */
export function hugeFile(tag: string, dir = DIR_2M): string {
  const p = path.join(dir, `test-${process.pid}-${tag}-${created.length}`);
  created.push(p);
  return p;
}

export function openEngine(opts: EngineOptions = {}): RasEngine {
  const e = RasEngine.open({ reserveBytes: 0, ...opts });
  open.push(e);
  return e;
}

afterEach(() => {
  // Files first: a deleted file's (simulated) poison then dies with the last mapping, as in the kernel.
  for (const p of created.splice(0)) fs.rmSync(p, { force: true });
  for (const e of open.splice(0)) e.close();
});

export function has1G(): boolean {
  try {
    return fs.statfsSync(DIR_1G).bsize === GiB && freeHugePages('1048576kB') > 0;
  } catch {
    return false;
  }
}

export function freeHugePages(size: '2048kB' | '1048576kB'): number {
  return Number(fs.readFileSync(`/sys/kernel/mm/hugepages/hugepages-${size}/free_hugepages`, 'utf8'));
}

/** The smaps entry (KernelPageSize, Rss, AnonHugePages, protection) covering a host address. */
export function smapsAt(addr: bigint): { start: bigint; end: bigint; perms: string; kernelPageKb: number; fields: Record<string, number> } | undefined {
  const text = fs.readFileSync('/proc/self/smaps', 'utf8');
  let cur: { start: bigint; end: bigint; perms: string; kernelPageKb: number; fields: Record<string, number> } | undefined;
  for (const line of text.split('\n')) {
    const m = /^([0-9a-f]+)-([0-9a-f]+) (\S+)/.exec(line);
    if (m) {
      if (cur && addr >= cur.start && addr < cur.end) return cur;
      cur = { start: BigInt('0x' + m[1]), end: BigInt('0x' + m[2]), perms: m[3], kernelPageKb: 0, fields: {} };
      continue;
    }
    const f = /^(\w+):\s+(\d+) kB/.exec(line);
    if (f && cur) {
      cur.fields[f[1]] = Number(f[2]);
      if (f[1] === 'KernelPageSize') cur.kernelPageKb = Number(f[2]);
    }
  }
  return cur && addr >= cur.start && addr < cur.end ? cur : undefined;
}
