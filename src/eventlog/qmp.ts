// QMP's MEMORY_FAILURE event (QEMU qapi/run-state.json, since 5.2): the shape a management agent that
// parses QEMU's events already takes. QEMU's own fields only, with its enum strings; what QMP lacks
// (which guest memory, how much, what it cost) goes under the one key EXTENSION_KEY in `data`
// (QMP clients ignore members they do not know).
import type { OutcomeRecord } from '../metrics/outcomes';
import { sizeLabel } from '../metrics/labels';

/** QEMU's MemoryFailureRecipient. */
export const QMP_RECIPIENTS = ['hypervisor', 'guest'] as const;
/** QEMU's MemoryFailureAction. */
export const QMP_ACTIONS = ['ignore', 'inject', 'fatal', 'reset'] as const;
export const EXTENSION_KEY = 'hugetlb-ras';

export interface QmpMemoryFailure {
  event: 'MEMORY_FAILURE';
  data: {
    recipient: (typeof QMP_RECIPIENTS)[number];
    action: (typeof QMP_ACTIONS)[number];
    flags: { 'action-required': boolean; recursive: boolean };
    [EXTENSION_KEY]: QmpExtension;
  };
  /** Wall clock, as QMP's: seconds and microseconds since the epoch. */
  timestamp: { seconds: number; microseconds: number };
}

export interface QmpExtension {
  region: string;
  /** Guest physical address of the lost frame (a hex string: JSON has no 64-bit integers). */
  'guest-physical-address': string;
  /** Bytes lost at that address: 4096, or the whole huge page when refused; 0 when touched again. */
  size: number;
  'page-size': string;
  /** 'AR', 'AO', or 'unknown' (the first report was not seen). */
  kind: OutcomeRecord['kind'];
  outcome: 'recovered' | 'refused' | 'already-lost';
  cause: string;
  /** Refused: why the huge page could not be split. */
  reason?: string;
  /** Monotonic nanoseconds from the first report to the whole page back, and to the vCPUs released. */
  'duration-ns'?: number;
  'stall-ns'?: number;
  path?: 'eager' | 'lazy';
}

const hex = (v: bigint) => '0x' + v.toString(16);

/** Wall clock now in QMP's shape (QEMU uses g_get_real_time: microseconds). */
export function qmpTimestamp(nowUs = Math.round((performance.timeOrigin + performance.now()) * 1000)): QmpMemoryFailure['timestamp'] {
  return { seconds: Math.floor(nowUs / 1e6), microseconds: nowUs % 1e6 };
}

/**
 * The QMP events for one outcome: one per lost frame (the VMM injects a machine check for each), one
 * for a lost frame touched again. Losses read from the journal are not new failures: none.
 */
export function toQmp(r: OutcomeRecord, timestamp = qmpTimestamp()): QmpMemoryFailure[] {
  if (r.outcome === 'imported') return [];
  // The engine's own guarded access (PoisonError thrown to the VMM's code): QEMU's hypervisor case.
  const hypervisor = r.outcome === 'already_lost' && r.by === 'engine-access';
  const frames = r.outcome === 'already_lost' ? [r.guestPhysAddr] : r.frames;
  return frames.map((gpa) => ({
    event: 'MEMORY_FAILURE',
    data: {
      recipient: hypervisor ? 'hypervisor' : 'guest',
      action: hypervisor ? 'ignore' : 'inject',
      flags: { 'action-required': r.kind !== 'AO', recursive: false },
      [EXTENSION_KEY]: {
        region: r.region,
        'guest-physical-address': hex(gpa),
        size: r.outcome === 'already_lost' ? 0 : r.frameSize,
        'page-size': sizeLabel(r.pageSize),
        kind: r.kind,
        outcome: (r.outcome === 'already_lost' ? 'already-lost' : r.outcome) as QmpExtension['outcome'],
        cause: r.cause,
        ...(r.reason !== undefined ? { reason: r.reason } : {}),
        ...(r.durationNs !== undefined ? { 'duration-ns': Number(r.durationNs) } : {}),
        ...(r.stallNs !== undefined ? { 'stall-ns': Number(r.stallNs) } : {}),
        ...(r.path !== undefined ? { path: r.path } : {}),
      },
    },
    timestamp,
  }));
}
