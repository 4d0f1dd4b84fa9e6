// Locked guest RAM for the reference VMM (issue 19): QEMU's -overcommit mem-lock=on|on-fault, done
// per region with mlock() / mlock2(MLOCK_ONFAULT) (a Node VMM cannot mlockall: V8 decommits its heap
// with MADV_DONTNEED, EINVAL on locked memory), and what /proc/self/smaps says of it afterwards.
import * as fs from 'node:fs';
import { vmmNative } from './native';

export type MemLock = 'off' | 'on' | 'on-fault';

/**
 * Locks one region's guest RAM. Through the engine's `region.lockMemory(mode)` where the engine has
 * it (issue 19, branch 'locked'): the kernel keeps no trace of an mlock on hugetlb memory, so only
 * the engine's own call lets it lock the ordinary pages that replace a poisoned huge page. Without
 * it, a bare mlock / mlock2(MLOCK_ONFAULT) of the region (its replacements then are not locked).
 */
export function lockGuestRam(region: { address: bigint; size: number }, mode: MemLock): 'engine' | 'mlock' | 'off' {
  if (mode === 'off') return 'off';
  const r = region as unknown as { lockMemory?: (m: 'on' | 'on-fault') => void };
  if (typeof r.lockMemory === 'function') {
    r.lockMemory(mode);
    return 'engine';
  }
  memLockRange(region.address, region.size, mode);
  return 'mlock';
}

/** mlock() ('on') or mlock2(MLOCK_ONFAULT) ('on-fault') of a range; a RasError-like Error with errno and syscall. */
export function memLockRange(address: bigint, size: number, mode: 'on' | 'on-fault'): void {
  (vmmNative() as unknown as { memLock(hva: bigint, size: number, mode: string): void }).memLock(address, size, mode);
}

export interface VmaFlags { start: bigint; end: bigint; flags: string[] }

/** The VMAs of this process that overlap [start, end), with their VmFlags (smaps). */
export function vmaFlags(start: bigint, end: bigint): VmaFlags[] {
  const out: VmaFlags[] = [];
  let cur: VmaFlags | undefined;
  for (const line of fs.readFileSync('/proc/self/smaps', 'utf8').split('\n')) {
    const m = /^([0-9a-f]+)-([0-9a-f]+) /.exec(line);
    if (m) {
      const s = BigInt('0x' + m[1]);
      const e = BigInt('0x' + m[2]);
      cur = s < end && e > start ? { start: s, end: e, flags: [] } : undefined;
      if (cur) out.push(cur);
    } else if (cur && line.startsWith('VmFlags:')) {
      cur.flags = line.slice(8).trim().split(/\s+/);
    }
  }
  return out;
}

/**
 * Whether every byte of [start, end) is mapped by a VMA with one of the flags (e.g. 'lo': VM_LOCKED).
 * Note: mlock() never sets VM_LOCKED on a hugetlbfs VMA (mlock_fixup skips them; their pages never
 * swap anyway), so "still locked" for guest RAM is `['lo', 'ht']`: hugetlb where the huge page
 * still is, locked where the engine replaced it.
 */
export function allHaveFlag(start: bigint, end: bigint, flag: string | string[]): { ok: boolean; vmas: VmaFlags[] } {
  const want = Array.isArray(flag) ? flag : [flag];
  const vmas = vmaFlags(start, end).sort((a, b) => (a.start < b.start ? -1 : 1));
  let at = start;
  for (const v of vmas) {
    if (v.start > at) break;
    if (v.end > at) at = v.end;
  }
  return { ok: at >= end && vmas.every((v) => want.some((f) => v.flags.includes(f))), vmas };
}
