// Node-style errors: every error has a `code`; a failed syscall also has `errno` and `syscall`.

export class RasError extends Error {
  readonly code: string;
  constructor(code: string, message: string, extra: Record<string, unknown> = {}) {
    super(message);
    this.name = 'RasError';
    this.code = code;
    Object.assign(this, extra);
  }
}

/** Thrown when guarded access touches poisoned or lost guest memory. */
export class PoisonError extends Error {
  readonly code = 'ERR_POISONED';
  constructor(
    readonly region: string,
    readonly offset: number,
    readonly guestPhysAddr: bigint,
    readonly hostAddress: bigint,
    readonly signal: number,
    readonly siCode: number,
  ) {
    super(`poisoned memory in region ${region} at offset 0x${offset.toString(16)} (guest physical 0x${guestPhysAddr.toString(16)})`);
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
