// The one typed view of the C++ addon: nothing else in the package calls the raw binding.
// Constants shared with the native code come from the addon (native/binding/constants.cc), and
// every native error is built as RasError (native/binding/errors.cc).
import bindings from 'bindings';
import { RasError } from './errors';
import type { Addon, BenchAddon } from './native/addon';
import type { NativeFault } from './native/types';

export type * from './native/types';
export type { BenchAddon } from './native/addon';

export const native: Addon = bindings('hugetlb_ras') as Addon;
native.setErrorClass(RasError);

const c = native.constants;

export const PageState = {
  Normal: c.pageState.normal,
  Pending: c.pageState.pending,
  Recovering: c.pageState.recovering,
  Split: c.pageState.split,
  Lost: c.pageState.lost,
} as const;
export type PageState = number;

export const NativeEventType = {
  Poison: c.eventType.poison,
  Recovered: c.eventType.recovered,
  Refused: c.eventType.refused,
  SubpageLost: c.eventType.subpageLost,
} as const;
export type NativeEventType = number;

/** Refuse-reason codes of setPolicy and of refused events (native/state/region.h RefuseReason). */
export const RefuseCode = {
  Eligible: c.refuseReason.eligible,
  SharedMapping: c.refuseReason.sharedMapping,
  VhostUser: c.refuseReason.vhostUser,
  Ivshmem: c.refuseReason.ivshmem,
  Vfio: c.refuseReason.vfio,
  KernelNoReadAround: c.refuseReason.kernelNoReadAround,
  ReadBackFailed: c.refuseReason.readBackFailed,
  NoMemory: c.refuseReason.noMemory,
} as const;
export type RefuseCode = number;

/** How lost subpages are kept out: enum hugetlb_ras_guard (mapRegion's guard, events' guard). */
export const GuardCode = {
  None: c.guard.none,
  Uffd: c.guard.uffd,
  Hwpoison: c.guard.hwpoison,
  Fault: c.guard.fault,
} as const;
export type GuardCode = number;

/** NativeFault.signal when a guarded access ended without a signal (native/capture/access.h kFault*). */
export const FaultCode = {
  NoSlot: -c.fault.noSlot,
  WaitTimeout: -c.fault.waitTimeout,
  EnginePaused: -c.fault.enginePaused,
} as const;

export const SIGBUS: number = c.sigbus;
export const SUBPAGE_SIZE: number = c.subpageSize;
export const HUGETLBFS_MAGIC: number = c.hugetlbfsMagic;
export const BUS_MCEERR_AR: number = c.busMceerrAr;
export const BUS_MCEERR_AO: number = c.busMceerrAo;

let bench: BenchAddon | undefined;
export function benchNative(): BenchAddon {
  if (!bench) {
    const b = bindings('hugetlb_ras_bench') as BenchAddon & Pick<Addon, 'setErrorClass'>;
    b.setErrorClass(RasError);
    bench = b;
  }
  return bench;
}

export function isFault(v: unknown): v is NativeFault {
  return typeof v === 'object' && v !== null && !Buffer.isBuffer(v) && typeof (v as NativeFault).fault === 'bigint';
}
