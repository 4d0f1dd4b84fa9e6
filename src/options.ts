// The options of the engine's entry points, and their validation: bad input is refused with a coded
// error before anything is created or changed.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { HUGETLBFS_MAGIC } from './constants';
import { checkUint, invalidArg, outOfRange, RasError } from './errors';
import { checkKeys } from './keys';
import { checkOutputOptions, type OutputOptions } from './outputs';
import { CONSUMERS, GUARD_MODES, type Consumer, type GuardMode } from './policy';
import type { Region, RegionSpec } from './region';

export interface EngineOptions extends OutputOptions {
  /** How lost subpages stay inaccessible (see `Guard`); 'auto': uffd, else hwpoison where permitted, else guard. */
  lostPageGuard?: GuardMode;
  /** Already-faulted replacement memory kept ready; 'auto': 8 blocks of 2 MiB, no 1 GiB block (16 MiB); 0: none. */
  reserveBytes?: number | 'auto';
  /**
   * Depth of the reserve per huge page size: how many pre-faulted replacement blocks of that size are
   * kept ready (refilled in the background), e.g. `{ '2M': 8, '1G': 1 }` ('auto' is `{ '2M': 8, '1G': 0 }`:
   * a 1 GiB block saves only the eager path's stall, see RESERVE_1G_STALL). A size given here
   * overrides `reserveBytes` for that size; each block costs its size in RAM.
   */
  reserve?: { '2M'?: number; '1G'?: number };
  /**
   * true (default): recover lazily where a full userfaultfd is available (stats().recovery says);
   * false: always the eager path (as where none is). Process-wide: the last open() decides.
   */
  lazyRecovery?: boolean;
  /** Durable ledger of lost frames, replayed on open. */
  journalPath?: string;
  /** Override the kernel check (Linux >= 6.5 reads a poisoned huge page back around the bad 4 KiB). */
  kernelReadsAroundPoison?: boolean;
  /** Threads reading a huge page back, per recovery lane (default 2); set by the first engine of the process. */
  readThreads?: number;
}

export type InjectMode = 'madvise' | 'simulate' | 'auto';

export interface InjectOptions {
  mode?: InjectMode;
  /** Simulate only: an action-optional report (found asynchronously) instead of action-required. */
  kind?: 'AR' | 'AO';
  /** Simulate only: false poisons silently, the report comes at the next access (as on Linux 6.1). */
  signal?: boolean;
}

export { checkKeys, OPTION_KEYS } from './keys';

/** Checks RasEngine.open's options; returns the guard mode asked for. */
export function checkEngineOptions(options: EngineOptions): GuardMode {
  if (typeof options !== 'object' || options === null) throw invalidArg('options must be an object');
  checkKeys(options, 'RasEngine.open');
  const guard = options.lostPageGuard === undefined ? 'auto' : options.lostPageGuard;
  if (!GUARD_MODES.includes(guard)) throw invalidArg(`lostPageGuard must be one of ${GUARD_MODES.join(', ')}`);
  if (options.reserveBytes !== undefined && options.reserveBytes !== 'auto') {
    checkUint(options.reserveBytes, 'reserveBytes');
    // It is pre-faulted: more than half the machine would only end in the OOM killer.
    if (options.reserveBytes > os.totalmem() / 2)
      throw outOfRange(`reserveBytes ${options.reserveBytes} is more than half of this machine's memory`);
  }
  if (options.reserve !== undefined) {
    if (typeof options.reserve !== 'object' || options.reserve === null) throw invalidArg("reserve must be an object like { '2M': 8, '1G': 1 }");
    checkKeys(options.reserve, 'reserve', 'page size');
    let bytes = 0;
    for (const [k, v] of Object.entries(options.reserve)) {
      if (k !== '2M' && k !== '1G') throw invalidArg(`reserve: unknown page size ${k} (2M or 1G)`);
      checkUint(v, `reserve['${k}']`);
      bytes += (v as number) * (k === '2M' ? 2 << 20 : 1 << 30);
    }
    if (bytes > os.totalmem() / 2) throw outOfRange(`reserve of ${bytes} bytes is more than half of this machine's memory`);
  }
  if (options.lazyRecovery !== undefined && typeof options.lazyRecovery !== 'boolean') throw invalidArg('lazyRecovery must be a boolean');
  if (options.readThreads !== undefined) checkUint(options.readThreads, 'readThreads');
  if (options.kernelReadsAroundPoison !== undefined && typeof options.kernelReadsAroundPoison !== 'boolean')
    throw invalidArg('kernelReadsAroundPoison must be a boolean');
  if (typeof options.metrics === 'object' && options.metrics !== null) checkKeys(options.metrics, 'metrics');
  checkOutputOptions(options);
  if (options.journalPath !== undefined && typeof options.journalPath !== 'string') throw invalidArg('journalPath must be a string');
  return guard;
}

export function checkInjectOptions(options: InjectOptions): Required<InjectOptions> {
  if (typeof options !== 'object' || options === null) throw invalidArg('options must be an object');
  checkKeys(options, 'injectPoison');
  const mode = options.mode ?? 'auto';
  if (!['madvise', 'simulate', 'auto'].includes(mode)) throw invalidArg(`mode must be madvise, simulate or auto`);
  const kind = options.kind ?? 'AR';
  if (kind !== 'AR' && kind !== 'AO') throw invalidArg('kind must be AR or AO');
  if (options.signal !== undefined && typeof options.signal !== 'boolean') throw invalidArg('signal must be a boolean');
  return { mode, kind, signal: options.signal ?? true };
}

/**
 * Checks a region spec against the file system and the regions already mapped (`regions`: this
 * engine's; `elsewhere`: the other engines' of this process); nothing is created.
 */
export function checkRegionSpec(spec: RegionSpec, regions: readonly Region[], elsewhere: readonly Region[] = []): Required<RegionSpec> {
  if (typeof spec !== 'object' || spec === null) throw invalidArg('region spec must be an object');
  checkKeys(spec, 'mapRegion');
  const { name, path: file } = spec;
  if (typeof name !== 'string' || name.length === 0 || name.length > 200) throw invalidArg('name must be a non-empty string');
  if (typeof file !== 'string' || file.length === 0 || file.includes('\0')) throw invalidArg('path must be a file path');
  const size = checkUint(spec.size, 'size');
  const offset = checkUint(spec.offset ?? 0, 'offset');
  const gpaIn = spec.guestPhysAddr ?? 0n;
  if (typeof gpaIn !== 'bigint' && !(typeof gpaIn === 'number' && Number.isSafeInteger(gpaIn)))
    throw invalidArg('guestPhysAddr must be a bigint');
  const guestPhysAddr = BigInt(gpaIn);
  if (guestPhysAddr < 0n || guestPhysAddr + BigInt(size) > 1n << 52n) throw outOfRange('guestPhysAddr outside the 52-bit physical address space');
  const share = spec.share ?? false;
  if (typeof share !== 'boolean') throw invalidArg('share must be a boolean');
  const consumers = spec.consumers ?? [];
  if (!Array.isArray(consumers) || consumers.some((c) => !CONSUMERS.includes(c as Consumer)))
    throw invalidArg(`consumers must be a list of ${CONSUMERS.join(', ')}`);
  for (const r of regions) {
    if (r.name === name) throw new RasError('ERR_REGION_EXISTS', `a region named ${name} is already mapped`);
    if (size > 0 && guestPhysAddr < r.guestPhysAddr + BigInt(r.size) && r.guestPhysAddr < guestPhysAddr + BigInt(size)) {
      const range = (a: bigint, n: number) => `[0x${a.toString(16)}, 0x${(a + BigInt(n)).toString(16)})`;
      throw new RasError(
        'ERR_REGION_OVERLAP',
        `region ${name}: guest physical range ${range(guestPhysAddr, size)} overlaps region ${r.name} ${range(r.guestPhysAddr, r.size)}` +
          (spec.guestPhysAddr === undefined ? '; guestPhysAddr defaults to 0n: give each region its own guestPhysAddr' : ''),
        { region: name, other: r.name },
      );
    }
  }
  // The file system is checked before anything is created: statfs of the directory.
  let st: fs.StatsFs;
  try {
    st = fs.statfsSync(path.dirname(path.resolve(file)));
  } catch (err) {
    throw Object.assign(new RasError((err as NodeJS.ErrnoException).code ?? 'ERR_INVALID_ARG', `cannot use ${file}: ${(err as Error).message}`), {
      errno: (err as NodeJS.ErrnoException).errno,
      syscall: 'statfs',
    });
  }
  if (st.type !== HUGETLBFS_MAGIC) throw new RasError('ERR_NOT_HUGETLBFS', `${file} is not on hugetlbfs (file system type 0x${st.type.toString(16)})`);
  const huge = st.bsize;
  if (size === 0 || size % huge !== 0) throw new RasError('ERR_SIZE_ALIGNMENT', `size ${size} is not a positive multiple of the huge page size ${huge}`);
  if (offset % huge !== 0) throw new RasError('ERR_SIZE_ALIGNMENT', `offset ${offset} is not a multiple of the huge page size ${huge}`);
  // The same file under another name (a hard link, a symlink) is the same file.
  let id: string | undefined;
  try {
    const st = fs.statSync(file);
    id = `${st.dev}:${st.ino}`;
  } catch {
    /* not there yet: created by the mapping */
  }
  for (const r of regions) {
    if (id !== undefined && r.fileId === id && offset < r.fileOffset + r.size && r.fileOffset < offset + size)
      throw new RasError('ERR_REGION_OVERLAP', `file range overlaps region ${r.name}`);
  }
  // Another engine of this process: two ledgers and journals for one memory, never.
  for (const r of elsewhere) {
    if ((id !== undefined && r.fileId === id) || path.resolve(r.path) === path.resolve(file))
      throw new RasError('ERR_REGION_OVERLAP', `${file} is already mapped by another engine of this process (its region ${r.name}): one engine per file`, {
        region: name,
        other: r.name,
      });
  }
  return { name, path: file, size, offset, guestPhysAddr, share, consumers: [...consumers] };
}
