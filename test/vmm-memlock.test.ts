// The reference VMM's --mem-lock (issue 19): guest RAM locked per region with mlock() or
// mlock2(MLOCK_ONFAULT), as QEMU's -overcommit mem-lock=on|on-fault, and the smaps reading the lab
// case uses to tell whether recovered pages are still locked. (Recovery of locked memory itself is
// the engine's, on branch 'locked'; the lab case k8/k8b runs it with real poison under KVM.)
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { RasEngine } from '../src/index';
import { allHaveFlag, lockGuestRam, memLockRange } from '../vmm/src/memlock';
import { DIR_2M } from './helpers';

const files: string[] = [];
let engine: RasEngine | undefined;
afterEach(() => {
  engine?.close();
  engine = undefined;
  for (const f of files.splice(0)) fs.rmSync(f, { force: true });
});

function region(name: string) {
  const file = path.join(DIR_2M, `vmm-memlock-${process.pid}-${name}`);
  files.push(file);
  engine ??= RasEngine.open({ reserveBytes: 0 });
  return engine.mapRegion({ name, path: file, size: 4 << 20, guestPhysAddr: 0x200000000n + BigInt(files.length) * 0x10000000n });
}

describe('reference VMM: --mem-lock', () => {
  it("'on' / 'on-fault' lock the region; a hugetlbfs VMA never shows 'lo' (mlock skips it), so 'still locked' is lo or ht", () => {
    const a = region('on');
    expect(lockGuestRam(a, 'on')).toMatch(/^(engine|mlock)$/);
    const v = allHaveFlag(a.address, a.address + BigInt(4 << 20), 'lo');
    expect(v.vmas.length).toBeGreaterThan(0);
    expect(v.vmas.every((x) => x.flags.includes('ht') && !x.flags.includes('lo'))).toBe(true); // the kernel's rule
    expect(allHaveFlag(a.address, a.address + BigInt(4 << 20), ['lo', 'ht']).ok).toBe(true);
    const b = region('onfault');
    lockGuestRam(b, 'on-fault');
    expect(allHaveFlag(b.address, b.address + BigInt(4 << 20), ['lo', 'ht']).ok).toBe(true);
    // A range not fully mapped is not "locked".
    expect(allHaveFlag(b.address, b.address + BigInt(8 << 20) + (1n << 40n), ['lo', 'ht']).ok).toBe(false);
  });

  it('a bad mode is a TypeError, an mlock failure carries errno and syscall', () => {
    const a = region('bad');
    expect(() => memLockRange(a.address, 4 << 20, 'yes' as never)).toThrow(TypeError);
    let err: (Error & { errno?: number; syscall?: string }) | undefined;
    try {
      memLockRange(1n << 47n, 4096, 'on'); // nothing mapped there
    } catch (e) {
      err = e as typeof err;
    }
    expect(err?.errno).toBe(12); // ENOMEM: not mapped
    expect(err?.syscall).toBe('mlock');
    expect(allHaveFlag(a.address, a.address + BigInt(4 << 20), 'lo').ok).toBe(false);
  });
});
