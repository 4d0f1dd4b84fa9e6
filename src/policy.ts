// The policy, decided before any error arrives so that the native worker can act at once while a vCPU
// is stalled: which regions may be recovered by a private copy (eligibility, with the kernel version
// gate), and how lost subpages are kept inaccessible (guard choice). Pure: no native calls (only the
// addon's constants, so the numbers crossing the boundary have one definition).
import * as os from 'node:os';
import { GuardCode, RefuseCode } from './native';

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

/** The native code of each reason (the numbers are the addon's: native/state/region.h). */
const REASON_CODES: Record<RefuseReason, number> = {
  'shared-mapping': RefuseCode.SharedMapping,
  'vhost-user': RefuseCode.VhostUser,
  ivshmem: RefuseCode.Ivshmem,
  vfio: RefuseCode.Vfio,
  'kernel-cannot-read-around-poison': RefuseCode.KernelNoReadAround,
  'read-back-failed': RefuseCode.ReadBackFailed,
  'no-memory': RefuseCode.NoMemory,
};

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
  return reason === null ? RefuseCode.Eligible : REASON_CODES[reason];
}

export function reasonFromCode(code: number): RefuseReason {
  const hit = (Object.keys(REASON_CODES) as RefuseReason[]).find((r) => REASON_CODES[r] === code);
  return hit ?? 'read-back-failed';
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

/**
 * How lost subpages stay inaccessible.
 * - `uffd`: a userfaultfd poison marker (Linux >= 6.6). Every access, a thread's or KVM's for a
 *   vCPU, gets SIGBUS BUS_MCEERR_AR for exactly that 4 KiB; no root needed; no page retired.
 * - `hwpoison`: MADV_HWPOISON (root): the same SIGBUS; the kernel retires one healthy page.
 * - `guard`: guard markers (Linux >= 6.13) or PROT_NONE: a thread gets a fault the engine turns
 *   into a report, but KVM cannot resolve it: KVM_RUN fails with EFAULT (or an MMIO exit).
 */
export type Guard = 'uffd' | 'hwpoison' | 'guard';
export type GuardMode = 'auto' | Guard;
export const GUARD_MODES: readonly GuardMode[] = ['auto', 'uffd', 'hwpoison', 'guard'];

/** The native code of each guard (enum hugetlb_ras_guard of include/hugetlb_ras.h, via the addon). */
export const GUARD_CODES: Record<Guard, number> = { uffd: GuardCode.Uffd, hwpoison: GuardCode.Hwpoison, guard: GuardCode.Fault };
export function guardFromCode(code: number): Guard {
  return code === GuardCode.Uffd ? 'uffd' : code === GuardCode.Hwpoison ? 'hwpoison' : 'guard';
}

/** What a VMM must know when the only guard is one KVM cannot honour. */
export const KVM_FAULT_GUARD_WARNING =
  'lost frames are guarded by guard markers / PROT_NONE: a KVM guest touching one makes KVM_RUN fail with EFAULT ' +
  '(or an MMIO exit on some hosts) instead of a machine check; the VMM must ask the engine ' +
  '(hugetlb_ras_api check_gpa / next_lost, include/hugetlb_ras.h) and inject the machine check itself';

/** auto: a poison marker (no healthy page retired), then MADV_HWPOISON where permitted, then guard pages. */
export function chooseGuard(mode: GuardMode, uffdUsable: boolean, hwpoisonOk: boolean): Guard {
  if (mode !== 'auto') return mode;
  if (uffdUsable) return 'uffd';
  if (hwpoisonOk) return 'hwpoison';
  return 'guard';
}

/** errno from the native MADV_HWPOISON probe: 0 or EFAULT means it would work. */
export function hwpoisonUsable(probeErrno: number): boolean {
  const EFAULT = 14;
  const ENOMEM = 12;
  return probeErrno === 0 || probeErrno === EFAULT || probeErrno === ENOMEM;
}
