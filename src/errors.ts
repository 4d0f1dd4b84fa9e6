// One error type for the whole package: every error it throws is a RasError with a `code` (the
// journal's file system errors too: ERR_JOURNAL_OPEN with the path and the fs error's errno); a failed syscall also has `errno`
// (negative, as Node's) and `syscall`. The native addon builds its errors as this class too.
import type * as os from 'node:os';

/** An errno name, as Node's fs errors and the addon's failed syscalls carry it (`ENOMEM`, `EACCES`, ...). */
export type ErrnoCode = keyof typeof os.constants.errno | 'EUNKNOWN';

/** Every code the package throws (docs/API.md lists the same). */
export type ErrorCode =
  // bad input
  | 'ERR_INVALID_ARG'
  | 'ERR_UNKNOWN_OPTION'
  | 'ERR_OUT_OF_RANGE'
  | 'ERR_NOT_HUGETLBFS'
  | 'ERR_NOT_REGULAR_FILE'
  | 'ERR_SIZE_ALIGNMENT'
  | 'ERR_REGION_OVERLAP'
  | 'ERR_REGION_EXISTS'
  | 'ERR_BAD_MANIFEST'
  // state
  | 'ERR_ENGINE_CLOSED'
  | 'ERR_REGION_CLOSED'
  | 'ERR_ENGINE_PAUSED'
  | 'ERR_ENGINE_IN_OTHER_THREAD'
  | 'ERR_PAGE_BUSY'
  | 'ERR_TIMEOUT'
  | 'ERR_LISTENER_FAILED'
  | 'ERR_HANDED_OVER'
  | 'ERR_HANDOVER_ABORTED'
  | 'ERR_NO_JOURNAL'
  // handover: why a huge page was not handed over (HandoverResult.notHandedOver[].code)
  | 'ERR_NO_HUGE_PAGE'
  | 'ERR_HANDOVER_FAILED'
  // limits and the machine
  | 'ERR_TOO_MANY_REGIONS'
  | 'ERR_TOO_MANY_THREADS'
  | 'ERR_HWPOISON_UNAVAILABLE'
  | 'ERR_UFFD_UNAVAILABLE'
  // guarded access
  | 'ERR_POISONED'
  | 'ERR_MEMORY_FAULT'
  // the journal
  | 'ERR_JOURNAL_BAD_RECORD'
  | 'ERR_JOURNAL_CLOSED'
  | 'ERR_JOURNAL_FAILED'
  | 'ERR_JOURNAL_FORMAT'
  | 'ERR_JOURNAL_LAYOUT_MISMATCH'
  | 'ERR_JOURNAL_LOCKED'
  | 'ERR_JOURNAL_OPEN'
  | 'ERR_JOURNAL_PERMISSIONS'
  | 'ERR_JOURNAL_REGION_RENAMED'
  | 'ERR_JOURNAL_VERSION'
  | 'ERR_JOURNAL_WRITE'
  // a failed syscall (with errno and syscall)
  | ErrnoCode;

export class RasError extends Error {
  readonly code: ErrorCode;
  /** The signature the native addon constructs it with: keep it. */
  constructor(code: string, message: string, extra: Record<string, unknown> = {}) {
    super(message);
    this.name = 'RasError';
    this.code = code as ErrorCode;
    Object.assign(this, extra);
  }
}

/** Thrown when guarded access touches poisoned or lost guest memory. */
export class PoisonError extends RasError {
  declare readonly code: 'ERR_POISONED';
  constructor(
    readonly region: string,
    readonly offset: number,
    readonly guestPhysAddr: bigint,
    readonly hostAddress: bigint,
    readonly signal: number,
    readonly siCode: number,
  ) {
    super('ERR_POISONED', `poisoned memory in region ${region} at offset 0x${offset.toString(16)} (guest physical 0x${guestPhysAddr.toString(16)})`);
    this.name = 'PoisonError';
  }
}

export function invalidArg(message: string): RasError {
  return new RasError('ERR_INVALID_ARG', message);
}

export function outOfRange(message: string): RasError {
  return new RasError('ERR_OUT_OF_RANGE', message);
}

/** A non-negative safe integer, or a clear error naming the argument. */
export function checkUint(value: unknown, name: string): number {
  if (typeof value !== 'number') throw invalidArg(`${name} must be a number, got ${typeof value}`);
  if (!Number.isSafeInteger(value) || value < 0) throw outOfRange(`${name} must be a non-negative safe integer, got ${value}`);
  return value;
}
