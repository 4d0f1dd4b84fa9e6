// The ordinary memory that stands in for a split huge page is guest RAM: a VMM that forks must not
// copy it (MADV_DONTFORK, VmFlags "dc"), and it goes on the NUMA node the huge page was on.
import * as fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import { native } from '../src/native';
import { hugeFile, MiB, openEngine, SUB } from './helpers';

const testing = native as unknown as { testNumaNode(id: number, page: number): { multiNode: boolean; node: number } };

/** VmFlags of every VMA overlapping [addr, addr+len). */
function vmFlags(addr: bigint, len: number): string[][] {
  const out: string[][] = [];
  let inRange = false;
  for (const line of fs.readFileSync('/proc/self/smaps', 'utf8').split('\n')) {
    const m = /^([0-9a-f]+)-([0-9a-f]+) /.exec(line);
    if (m) {
      inRange = BigInt('0x' + m[1]) < addr + BigInt(len) && BigInt('0x' + m[2]) > addr;
      continue;
    }
    if (inRange && line.startsWith('VmFlags:')) out.push(line.slice(8).trim().split(/\s+/));
  }
  return out;
}

function multiNodeHost(): boolean {
  try {
    return /[-,]/.test(fs.readFileSync('/sys/devices/system/node/online', 'utf8'));
  } catch {
    return false;
  }
}

async function waitFor(cond: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond() && Date.now() < end) await new Promise((r) => setTimeout(r, 10));
}

describe('replacement memory', () => {
  for (const [what, opts] of [
    ['a fresh block', { reserveBytes: 0 }],
    ['the reserve', { reserveBytes: 4 * MiB }],
    ['PROT_NONE holes (no guard markers)', { reserveBytes: 0, markers: false }],
  ] as const) {
    it(`is not inherited by a fork (MADV_DONTFORK, VmFlags dc): ${what}`, async () => {
      const engine = openEngine({ reserveBytes: opts.reserveBytes, lostPageGuard: 'guard' });
      if ('markers' in opts) native.useGuardMarkers(false);
      try {
        const region = engine.mapRegion({ name: 'ram', path: hugeFile('dontfork'), size: 4 * MiB });
        if (opts.reserveBytes) await waitFor(() => engine.stats().reserveBytes >= opts.reserveBytes);
        const used: boolean[] = [];
        engine.on('recovered', (e) => used.push(e.usedReserve));
        engine.injectPoison(region, 2 * MiB + 5 * SUB, { mode: 'simulate' });
        engine.injectPoison(region, 2 * MiB + 9 * SUB, { mode: 'simulate' });
        await engine.whenIdle({ timeoutMs: 10_000 });
        expect(used[0]).toBe(opts.reserveBytes > 0);
        const page = region.address + BigInt(2 * MiB);
        const flags = vmFlags(page, 2 * MiB);
        expect(flags.length).toBeGreaterThan(0);
        for (const f of flags) expect(f).toContain('dc');
        // The huge page that was not split is the file's shared mapping, as before.
        expect(vmFlags(region.address, 2 * MiB)[0]).not.toContain('dc');
      } finally {
        native.useGuardMarkers(true);
      }
    });
  }

  it('is placed on the huge page\'s NUMA node (a no-op on a single-node host)', async () => {
    const engine = openEngine();
    const region = engine.mapRegion({ name: 'ram', path: hugeFile('numa'), size: 4 * MiB });
    region.write(2 * MiB, Buffer.from('x'));
    const where = testing.testNumaNode(region.id, 1);
    expect(where.multiNode).toBe(multiNodeHost());
    if (!where.multiNode) {
      expect(where.node).toBe(-1); // nothing asked, nothing bound
      return;
    }
    expect(where.node).toBeGreaterThanOrEqual(0);
    engine.injectPoison(region, 2 * MiB + 5 * SUB, { mode: 'simulate' });
    await engine.whenIdle({ timeoutMs: 10_000 });
    const maps = fs.readFileSync('/proc/self/numa_maps', 'utf8');
    const line = maps.split('\n').find((l) => l.startsWith((region.address + BigInt(2 * MiB)).toString(16) + ' '));
    expect(line).toMatch(new RegExp(`N${where.node}=`));
  });
});
