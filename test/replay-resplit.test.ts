// Issue 19, defect 6: a re-split during the journal's replay that fails leaves the page's state Lost;
// its memory must then be inaccessible (as markLost makes it), never the file page read-write.
import * as fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import { native, PageState } from '../src/native';
import { hugeFile, MiB, openEngine } from './helpers';

/** The permissions ('rw-s', '---s', ...) of every VMA overlapping [addr, addr+len). */
function perms(addr: bigint, len: number): string[] {
  const out: string[] = [];
  for (const line of fs.readFileSync('/proc/self/maps', 'utf8').split('\n')) {
    const m = /^([0-9a-f]+)-([0-9a-f]+) (\S+)/.exec(line);
    if (m && BigInt('0x' + m[1]) < addr + BigInt(len) && BigInt('0x' + m[2]) > addr) out.push(m[3]);
  }
  return out;
}

describe('replay: a failed re-split', () => {
  it('leaves the huge page inaccessible, as its Lost state says', () => {
    const engine = openEngine();
    const region = engine.mapRegion({ name: 'rs', path: hugeFile('rs'), size: 4 * MiB });
    region.write(2 * MiB, Buffer.from('data'));
    // Every subpage known lost: nothing can stand in for the page, so the re-split fails.
    const all = Array.from({ length: (2 * MiB) / 4096 }, (_, i) => i);
    const r = native.recoverNow(region.id, 1, all);
    expect(r.ok).toBe(false);
    expect(native.pageStates(region.id)[1]).toBe(PageState.Lost);
    const p = perms(region.address + BigInt(2 * MiB), 2 * MiB);
    expect(p.length).toBeGreaterThan(0);
    for (const x of p) expect(x.startsWith('---')).toBe(true);
    expect(() => region.read(2 * MiB, 4)).toThrow();
    // The other huge page is untouched.
    expect(perms(region.address, 2 * MiB)).toEqual(['rw-s']);
  });
});
