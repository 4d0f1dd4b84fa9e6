// The policy, decided before any error arrives so that the native worker can act at once while a vCPU
// is stalled: which regions may be recovered by a private copy (eligibility, with the kernel version
// gate), and how lost subpages are kept inaccessible (guard choice). Pure: no native calls.
import * as os from 'node:os';

export type Consumer = 'vhost-user' | 'ivshmem' | 'vfio';
export const CONSUMERS: readonly Consumer[] = ['vhost-user', 'ivshmem', 'vfio'];

export type RefuseReason =
  | 'shared-mapping'
  | 'vhost-user'
  | 'ivshmem'
  | 'vfio'
  | 'kernel-cannot-read-around-poison'
  | 'read-back-failed'
  | 'no-memory';

/** Same numbering as native/registry.h RefuseReason. */
const REASON_CODES: readonly (RefuseReason | null)[] = [
  null,
  'shared-mapping',
  'vhost-user',
  'ivshmem',
  'vfio',
  'kernel-cannot-read-around-poison',
  'read-back-failed',
  'no-memory',
];

export const REASON_WORDS: Record<RefuseReason, string> = {
  'shared-mapping': 'another process maps this memory (share=on): a private copy would diverge from what it sees',
  'vhost-user': 'a vhost-user backend maps this memory: a private copy would diverge from what the device sees',
  ivshmem: 'ivshmem shares this memory with another VM: a private copy would diverge from what it sees',
  vfio: 'vfio may have this memory pinned for DMA: the device would keep using the poisoned page',
  'kernel-cannot-read-around-poison': 'this kernel cannot read a poisoned huge page back (Linux >= 6.5 is needed)',
  'read-back-failed': 'the huge page could not be read back from its backing file',
  'no-memory': 'no memory for the replacement pages',
};

export function reasonCode(reason: RefuseReason | null): number {
  return REASON_CODES.indexOf(reason);
}

export function reasonFromCode(code: number): RefuseReason {
  return REASON_CODES[code] ?? 'read-back-failed';
}

/** Linux reads around a poisoned hugetlb subpage since 6.5. */
export function kernelReadsAroundPoison(release = os.release()): boolean {
  const m = /^(\d+)\.(\d+)/.exec(release);
  if (!m) return false;
  const major = Number(m[1]);
  const minor = Number(m[2]);
  return major > 6 || (major === 6 && minor >= 5);
}

export interface EligibilityInput {
  share: boolean;
  consumers: readonly Consumer[];
  kernelReadsAround: boolean;
}

/** Why a region must not be recovered, or null when it may be. Sharing is checked first. */
export function ineligibleReason(input: EligibilityInput): RefuseReason | null {
  if (input.share) return 'shared-mapping';
  for (const c of CONSUMERS) if (input.consumers.includes(c)) return c;
  if (!input.kernelReadsAround) return 'kernel-cannot-read-around-poison';
  return null;
}

export type GuardMode = 'auto' | 'hwpoison' | 'guard';

export const GUARD_MODES: readonly GuardMode[] = ['auto', 'hwpoison', 'guard'];

/** errno from the native MADV_HWPOISON probe: 0 or EFAULT means it would work. */
export function hwpoisonUsable(probeErrno: number): boolean {
  const EFAULT = 14;
  const ENOMEM = 12;
  return probeErrno === 0 || probeErrno === EFAULT || probeErrno === ENOMEM;
}

/** The guard lost subpages get: the mode asked for; 'auto' is real hwpoison where MADV_HWPOISON is usable. */
export function chooseGuard(mode: GuardMode, hwpoisonIsUsable: boolean): 'hwpoison' | 'guard' {
  return mode === 'guard' ? 'guard' : mode === 'hwpoison' ? 'hwpoison' : hwpoisonIsUsable ? 'hwpoison' : 'guard';
}
