// A guest RAM region on hugetlbfs, mapped MAP_SHARED by the engine.
import { BUS_MCEERR_AO, BUS_MCEERR_AR, FaultCode, SIGBUS } from './constants';
import { checkUint, invalidArg, outOfRange, PoisonError, RasError } from './errors';
import { isFault, native, type NativeFault } from './native';
import type { Consumer, RefuseReason } from './policy';

export interface RegionSpec {
  /** Unique name within the engine (also the journal's key). */
  name: string;
  /** A file on hugetlbfs; created and sized if missing. */
  path: string;
  /** Bytes; a multiple of the huge page size. */
  size: number;
  /** Offset in the file; a multiple of the huge page size. */
  offset?: number;
  /** Guest physical address of the region's first byte. */
  guestPhysAddr?: bigint;
  /** Other processes map the file (share=on): not eligible for recovery. */
  share?: boolean;
  /** Devices or processes that map or pin this memory: not eligible for recovery. */
  consumers?: Consumer[];
}

/** @internal Native threads using a region's memory (a vCPU load): the engine stops them before it unmaps the region. */
export interface RegionUser {
  readonly region: Region;
  /** Joins the threads now (also those waiting for a paused engine); idempotent. */
  stopNow(): void;
}

export class Region {
  /** @internal */ closed = false;
  /** @internal Huge pages handed over (prepareHandover): their data in the file must not go stale. */
  readonly handedOverPages = new Set<number>();

  /** @internal */
  constructor(
    /** @internal */ readonly id: number,
    readonly name: string,
    readonly path: string,
    readonly address: bigint,
    readonly size: number,
    readonly fileOffset: number,
    readonly hugePageSize: number,
    readonly guestPhysAddr: bigint,
    readonly share: boolean,
    readonly consumers: readonly Consumer[],
    readonly ineligibleReason: RefuseReason | null,
    readonly bookkeepingBytes: number,
    /** @internal dev:ino of the backing file */ readonly fileId: string,
  ) {}

  get eligible(): boolean {
    return this.ineligibleReason === null;
  }

  get hugePages(): number {
    return this.size / this.hugePageSize;
  }

  /** Guarded read: throws PoisonError instead of dying on poisoned or lost memory. */
  read(offset: number, length: number): Buffer {
    this.checkRange(offset, length);
    const r = native.read(this.id, offset, length);
    if (isFault(r)) throw this.faultError(r);
    return r as Buffer;
  }

  /** Guarded write: throws PoisonError instead of dying on poisoned or lost memory. */
  write(offset: number, bytes: Uint8Array): void {
    if (!(bytes instanceof Uint8Array)) throw invalidArg('bytes must be a Buffer or Uint8Array');
    this.checkRange(offset, bytes.length);
    this.checkNotHandedOver(offset, bytes.length);
    const buf = Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length);
    const r = native.write(this.id, offset, buf);
    if (isFault(r)) throw this.faultError(r);
  }

  /**
   * Read that never throws for lost memory: each lost 4 KiB frame (a lost frame, or every frame of
   * a whole lost huge page) reads as zeros and its region offset (4 KiB aligned) is listed,
   * ascending. Waits for a huge page under recovery as read() does (same errors).
   */
  readAvailable(offset: number, length: number): { data: Buffer; lostOffsets: number[] } {
    this.checkRange(offset, length);
    const r = native.readAvailable(this.id, offset, length);
    if (isFault(r)) throw this.faultError(r);
    return { data: r.data, lostOffsets: r.lost };
  }

  /** Write that never throws for lost memory: every healthy frame is written; returns the lost frames' offsets, skipped. */
  writeAvailable(offset: number, bytes: Uint8Array): number[] {
    if (!(bytes instanceof Uint8Array)) throw invalidArg('bytes must be a Buffer or Uint8Array');
    this.checkRange(offset, bytes.length);
    this.checkNotHandedOver(offset, bytes.length);
    const buf = Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length);
    const r = native.writeAvailable(this.id, offset, buf);
    if (isFault(r)) throw this.faultError(r);
    return r;
  }

  /** A write to a handed-over huge page would make its file data stale again: refused. */
  private checkNotHandedOver(offset: number, length: number): void {
    if (this.handedOverPages.size === 0 || length === 0) return;
    const first = Math.floor(offset / this.hugePageSize);
    const last = Math.floor((offset + length - 1) / this.hugePageSize);
    for (let p = first; p <= last; p++) {
      if (this.handedOverPages.has(p))
        throw new RasError(
          'ERR_HANDED_OVER',
          `region ${this.name} huge page ${p} was handed over (prepareHandover): a write would make the file's data stale; abortHandover() first to run the guest here again`,
          { region: this.name, offset, hugePageIndex: p },
        );
    }
  }

  /**
   * Lock the region's memory as QEMU's `-overcommit mem-lock=on|on-fault` does: 'on' is mlock
   * (faults every huge page in), 'on-fault' mlock2(MLOCK_ONFAULT), 'off' munlock. The kernel keeps
   * no trace of a lock on hugetlb memory, so lock guest RAM here (not with a bare mlock): every
   * ordinary page that later stands in for a poisoned huge page is then locked too (see
   * stats().memory when RLIMIT_MEMLOCK refuses it). Throws a RasError with `errno` and `syscall`.
   */
  lockMemory(mode: 'on' | 'on-fault' | 'off'): void {
    this.checkOpen();
    const code = mode === 'off' ? 0 : mode === 'on' ? 1 : mode === 'on-fault' ? 2 : -1;
    if (code < 0) throw invalidArg("mode must be 'on', 'on-fault' or 'off'");
    native.lockRegion(this.id, code);
  }

  /** Guest physical address of a byte offset in this region. */
  guestPhysAddrOf(offset: number): bigint {
    return this.guestPhysAddr + BigInt(offset);
  }

  /** Byte offset in this region of a host virtual address. */
  offsetOf(hostAddress: bigint): number {
    return Number(hostAddress - this.address);
  }

  /** @internal */
  checkOpen(): void {
    if (this.closed) throw new RasError('ERR_REGION_CLOSED', `region ${this.name} is unmapped (engine closed)`);
  }

  /** @internal */
  checkRange(offset: number, length: number): void {
    this.checkOpen();
    checkUint(offset, 'offset');
    checkUint(length, 'length');
    if (offset > this.size || length > this.size - offset)
      throw outOfRange(`offset ${offset} + length ${length} is outside region ${this.name} (size ${this.size})`);
  }

  /** @internal */
  static check(region: unknown): Region {
    if (!(region instanceof Region)) throw invalidArg('region must be a Region returned by mapRegion');
    region.checkOpen();
    return region;
  }

  /** @internal */
  faultError(f: NativeFault): Error {
    const offset = this.offsetOf(f.fault);
    // No signal: a guarded access waited for a huge page under recovery and gave up (native/access.h).
    if (f.signal === FaultCode.WaitTimeout)
      return new RasError('ERR_TIMEOUT', `region ${this.name} offset 0x${offset.toString(16)}: its huge page was still being recovered after 10 s`, { region: this.name, offset });
    if (f.signal === FaultCode.EnginePaused)
      return new RasError('ERR_ENGINE_PAUSED', `region ${this.name} offset 0x${offset.toString(16)}: its huge page waits for the paused engine (resume())`, { region: this.name, offset });
    if (f.signal === SIGBUS && (f.code === BUS_MCEERR_AR || f.code === BUS_MCEERR_AO))
      return new PoisonError(this.name, offset, this.guestPhysAddrOf(offset), f.fault, f.signal, f.code);
    return new RasError(
      'ERR_MEMORY_FAULT',
      `memory fault (signal ${f.signal}, code ${f.code}) in region ${this.name} at offset 0x${offset.toString(16)}: ` +
        'was the backing file truncated?',
      { region: this.name, offset, signal: f.signal, siCode: f.code },
    );
  }
}
