// Whether MADV_HWPOISON works in this process (root, CONFIG_MEMORY_FAILURE): probed once, natively.
import { RasError } from './errors';
import { native } from './native';
import { hwpoisonUsable } from './policy';

let probeErrno: number | undefined;

/** errno of the native probe (0: it works), cached for the process. */
function probeHwpoison(): number {
  if (probeErrno === undefined) probeErrno = native.hwpoisonProbe();
  return probeErrno;
}

export function hwpoisonIsUsable(): boolean {
  return hwpoisonUsable(probeHwpoison());
}

function errnoName(errno: number): string {
  const names: Record<number, string> = { 1: 'EPERM', 22: 'EINVAL', 38: 'ENOSYS' };
  return names[errno] ?? `errno ${errno}`;
}

/** ERR_HWPOISON_UNAVAILABLE with the probe's errno; `hint` says what to do instead. */
export function hwpoisonUnavailable(hint: string): RasError {
  const e = probeHwpoison();
  return new RasError('ERR_HWPOISON_UNAVAILABLE', `MADV_HWPOISON is not usable here (${errnoName(e)}): ${hint}`, {
    errno: -e,
    syscall: 'madvise',
  });
}
