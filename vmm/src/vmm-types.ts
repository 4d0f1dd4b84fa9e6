// The reference VMM's options, region specs and report types (vmm.ts is the machine itself).
import type { EngineOptions, RecoveredEvent, RefusedEvent, PoisonEvent } from '../../src/index';
import type { MemLock } from './memlock';
import type { NativeVm, NativeVmStats, SigbusCounters, VcpuPath } from './native';

export const MiB = 1 << 20;
export const GiB = 1 << 30;
export interface VmmRegionSpec {
  name: string;
  pageSize: '2M' | '1G';
  size: number;
  guestPhysAddr: bigint;
  /** Parts of the region the guest fills and verifies ([offset, size) pairs); default: all of it
   * (the first region's first 2 MiB, which holds the guest's code and tables, never). */
  verify?: { offset: number; size: number }[];
}

export interface ReferenceVmmOptions {
  vcpus?: number;
  seed?: bigint;
  regions?: VmmRegionSpec[];
  /** hugetlbfs mounts; default $HUGETLB_RAS_DIR/{2M,1G} (/mnt/hugetlb-ras). */
  dir2M?: string;
  dir1G?: string;
  engine?: EngineOptions;
  /** How long check_* may block (ms). */
  waitMs?: number;
  /** Minimum interval of heartbeat (PASS) events per vCPU; the counters are always exact. */
  passEventMs?: number;
  /** Use the engine's C API (default true where the engine has nativeApi()). */
  useApi?: boolean;
  /** Tests: a GPA the guest's #MC handler reads before it clears MCIP (a machine check inside one). */
  mcTouchGpa?: bigint;
  /** Take each lost frame out of KVM's memory slots (not in the first region): later guest accesses are MMIO exits. */
  unmapLost?: boolean;
  /** Tests: a GPA the guest's vCPU 0 probes (load, store, read-modify-write) once it knows it lost. */
  probeGpa?: bigint;
  /** Lock the guest RAM: mlock ('on') or mlock2(MLOCK_ONFAULT) ('on-fault'), QEMU's -overcommit mem-lock. */
  memLock?: MemLock;
  /** A migration destination (vmm/src/migration): fresh regions, no boot; RAM and vCPU state come from a stream. */
  restore?: boolean;
}

/** The default guest RAM: two regions of 2 MiB pages and one 1 GiB page. */
export function defaultRegions(opts: { with1G?: boolean; verify1G?: { offset: number; size: number }[] } = {}): VmmRegionSpec[] {
  const r: VmmRegionSpec[] = [
    { name: 'low', pageSize: '2M', size: 4 * MiB, guestPhysAddr: 0n },
    { name: 'ram2m', pageSize: '2M', size: 8 * MiB, guestPhysAddr: 0x1000000n },
  ];
  if (opts.with1G !== false) r.push({ name: 'ram1g', pageSize: '1G', size: GiB, guestPhysAddr: 0x40000000n, verify: opts.verify1G });
  return r;
}

export interface GuestMce {
  cpu: number;
  /** MCi_ADDR as the guest read it, and the 4 KiB frame it names. */
  addr: bigint;
  gpa: bigint;
  status: bigint;
  mcgStatus: bigint;
  misc: bigint;
  bank: number;
  rip: bigint;
  /** The guest's verifier was interrupted and skipped the frame. */
  skipped: boolean;
  /** Where the guest was interrupted: RAS_SITE_* of vmm/guest/proto.h (1 verifier, 2|0x10 probe load, rax intact, 3 probe RMW, 4 after the probe store). */
  site: number;
}

export interface Injection {
  cpu: number;
  gpa: bigint;
  path: VcpuPath;
  status: bigint;
  mcgStatus: bigint;
  misc: bigint;
  wholeHugePage: boolean;
  code: number;
  errno: number;
  /** Action required (the vCPU's access named the frame) or optional (next_lost, a dropped store). */
  ar: boolean;
  bank: number;
  /** Intel without LMCE: every other vCPU got QEMU's broadcast piece. */
  broadcast: boolean;
  lmce: boolean;
}

/** A machine check that was not (yet) delivered, or a broadcast piece: see vmm/native/mce_delivery.h. */
export interface MceOutcome { cpu: number; gpa: bigint; kind: string; verdict: string; bank: number; status: bigint; mcgStatus: bigint; errno: number }

export interface Stall { cpu: number; path: VcpuPath; address: bigint; byHva: boolean; ns: bigint; state: string }
export interface WrongFrame { cpu: number; gpa: bigint; wrongBytes: number; got: bigint; expected: bigint }

export interface VmmReport {
  vcpus: NativeVmStats['vcpus'];
  duplicateInjections: number;
  guestMces: GuestMce[];
  injections: Injection[];
  /** Deferred AOs, broadcast pieces, merged pieces, disabled reporting, shutdowns. */
  mceOutcomes: MceOutcome[];
  stalls: Stall[];
  wrong: WrongFrame[];
  errors: { cpu: number; text: string }[];
  hello: { cpu: number; mcgCap: bigint; cr4: bigint; banks: number; frames: number }[];
  sigbus: SigbusCounters;
  info: ReturnType<NativeVm['info']>;
  engineGuard: string;
  apiUsed: boolean;
  events: { poison: PoisonEvent[]; recovered: RecoveredEvent[]; refused: RefusedEvent[] };
  kicked: boolean;
}

