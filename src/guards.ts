// What this kernel and process offer for keeping lost subpages inaccessible, probed once,
// natively: MADV_HWPOISON (root, CONFIG_MEMORY_FAILURE) and a userfaultfd with poison markers.
import * as os from 'node:os';
import { RasError } from './errors';
import { native, type NativeUffdInfo } from './native';
import { hwpoisonUsable } from './policy';

let probeErrno: number | undefined;
let uffd: NativeUffdInfo | undefined;

/** errno of the native probe (0: it works), cached for the process. */
function probeHwpoison(): number {
  if (probeErrno === undefined) probeErrno = native.hwpoisonProbe();
  return probeErrno;
}

export function hwpoisonIsUsable(): boolean {
  return hwpoisonUsable(probeHwpoison());
}

/** The process's userfaultfd for poison markers (opened once; kind 'none' with why). */
export function uffdInfo(): NativeUffdInfo {
  if (uffd === undefined) uffd = native.uffdInfo();
  return uffd;
}

export function errnoName(errno: number): string {
  const hit = Object.entries(os.constants.errno).find(([, v]) => v === errno);
  return hit ? hit[0] : `errno ${errno}`;
}

/** What root (or the VMM's packaging) can do where no userfaultfd with poison markers opens. */
export const UFFD_ADVICE =
  'poison markers need Linux >= 6.6 with CONFIG_USERFAULTFD, and userfaultfd(2) not blocked by seccomp or an LSM ' +
  '(container runtimes block it by default); any user may open the user-mode-only kind that markers need';

/** ERR_HWPOISON_UNAVAILABLE with the probe's errno; `hint` says what to do instead. */
export function hwpoisonUnavailable(hint: string): RasError {
  const e = probeHwpoison();
  return new RasError('ERR_HWPOISON_UNAVAILABLE', `MADV_HWPOISON is not usable here (${errnoName(e)}): ${hint}`, {
    errno: -e,
    syscall: 'madvise',
  });
}

/** ERR_UFFD_UNAVAILABLE: lostPageGuard 'uffd' was asked for where no such userfaultfd opens. */
export function uffdUnavailable(): RasError {
  const u = uffdInfo();
  return new RasError('ERR_UFFD_UNAVAILABLE', `no userfaultfd with poison markers here (${u.syscall}: ${errnoName(u.errno)}): ${UFFD_ADVICE}`, {
    errno: -u.errno,
    syscall: u.syscall,
  });
}

/** Why MADV_HWPOISON (real poison) is not usable here, in words; undefined where it is. */
export function hwpoisonWhyNot(): string | undefined {
  if (hwpoisonIsUsable()) return undefined;
  const e = probeHwpoison();
  const EPERM = 1;
  const EINVAL = 22;
  if (process.geteuid?.() !== 0 || e === EPERM) return `not root: MADV_HWPOISON needs CAP_SYS_ADMIN (madvise: ${errnoName(e)})`;
  if (e === EINVAL) return `the kernel has no CONFIG_MEMORY_FAILURE (madvise(MADV_HWPOISON): EINVAL)`;
  return `madvise(MADV_HWPOISON) fails with ${errnoName(e)}`;
}

/** Why the engine's 'auto' guard is the one it is, in words. */
export function guardWhy(guard: 'uffd' | 'hwpoison' | 'guard', asked: string): string {
  if (asked !== 'auto') return `asked for (lostPageGuard '${asked}')`;
  const u = uffdInfo();
  const noUffd = `no userfaultfd with poison markers (${u.syscall ?? 'userfaultfd'}: ${errnoName(u.errno)})`;
  if (guard === 'uffd') return `'auto' picks it first: a ${u.kind} userfaultfd with poison markers opened`;
  if (guard === 'hwpoison') return `'auto': ${noUffd}, and MADV_HWPOISON is usable (root, CONFIG_MEMORY_FAILURE)`;
  return `'auto': ${noUffd}, and MADV_HWPOISON is not usable (${hwpoisonWhyNot()}); the last resort`;
}
