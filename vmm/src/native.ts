// Typed view of the reference VMM's native module (vmm/native, built as ras_vmm.node).
import * as fs from 'node:fs';
import * as path from 'node:path';

export interface NativeSlot { gpa: bigint; size: number; hva: bigint }
export interface NativeRange { gpa: bigint; size: number }

export interface NativeVmOptions {
  vcpus: number;
  seed: bigint;
  /** The engine's C API table (engine.nativeApi()), 0n for none. */
  api: bigint;
  slots: NativeSlot[];
  ranges: NativeRange[];
  image: Buffer;
  waitMs?: number;
  passEventMs?: number;
  mcTouchGpa?: bigint;
  unmapLost?: boolean;
  probeGpa?: bigint;
  /** A migration destination: no boot (no system area, no registers); restoreState() before start(). */
  restore?: boolean;
}

/** KVM state of a paused machine (vmm/native/vcpu_state.h records). */
export interface NativeMachineState { vcpus: Buffer[]; vm: Buffer }

/** One event from a vCPU thread; v holds the raw values (see vmm/native/vcpu_loop.h). */
export interface NativeVmEvent { type: number; cpu: number; v: bigint[]; text?: string }

export const EV_GUEST = 1;
export const EV_INJECTED = 2;
export const EV_STALL = 3;
export const EV_ERROR = 4;

export const GUEST_HELLO = 1n;
export const GUEST_FILLED = 2n;
export const GUEST_PASS = 3n;
export const GUEST_MCE = 4n;
export const GUEST_WRONG = 5n;
export const GUEST_FATAL = 6n;
export const GUEST_BYE = 7n;

export const PATH_NAMES: Record<number, VcpuPath> = { 1: 'sigbus', 2: 'efault', 3: 'mmio', 4: 'next-lost', 5: 'memory-fault' };
export type VcpuPath = 'sigbus' | 'efault' | 'mmio' | 'next-lost' | 'memory-fault';

export interface NativeVcpuStats {
  runs: number;
  pio: number;
  /** KVM_EXIT_MMIO with phys_addr inside guest RAM (the dev machine's KVM for poisoned memory). */
  mmioInRam: number;
  mmioOutside: number;
  /** KVM_RUN -1/EFAULT. */
  efault: number;
  efaultUnresolved: number;
  eintr: number;
  /** KVM_RUN -1/EINTR with a SIGBUS recorded by the VMM's own handler. */
  eintrSigbus: number;
  injected: number;
  deferred: number;
  injectFailed: number;
  healthy: number;
  recovering: number;
  lost: number;
  notRam: number;
  passes: number;
  verified: number;
  wrongBytes: number;
  filled: number;
  guestMces: number;
  state: 'running' | 'bye' | 'halted' | 'fatal' | 'error' | 'kicked';
  done: boolean;
  error?: string;
}

export interface NativeVmStats { vcpus: NativeVcpuStats[]; duplicateInjections: number }

export interface NativeVm {
  start(cb: (events: NativeVmEvent[]) => void): void;
  requestStop(): void;
  kick(): void;
  allDone(): boolean;
  join(): NativeVmStats;
  stats(): NativeVmStats;
  info(): { vendor: string; mcgCap: bigint; cpuid1Edx: number; cpuid80000007Ebx?: number };
  /** Kicks and joins what still runs, then closes the VM's KVM fds (not left to the GC). */
  dispose(): void;
  /** Kick, join, and a KVM_RUN with immediate_exit per vCPU (its last exit completed). */
  pause(): void;
  /** Starts the joined vCPU threads again. */
  resume(cb: (events: NativeVmEvent[]) => void): void;
  saveState(): NativeMachineState;
  /** Before start() on a machine opened with restore: MSRs this KVM refused (none of the machine-check ones). */
  restoreState(s: NativeMachineState): { msrFailed: number[] };
  /** KVM_MEM_LOG_DIRTY_PAGES on every slot (or off). */
  dirtyLog(on: boolean): void;
  /** KVM_GET_DIRTY_LOG of every slot, in slot (= region) order: bit i of the little-endian bitmap = page i. */
  takeDirty(): Buffer[];
}

/** v[5] of an EV_INJECTED event: whole | bank << 8 | verdict << 16 | flags << 24. */
export const MCE_VERDICTS = ['inject', 'defer', 'disabled', 'shutdown', 'merged'] as const;
export type MceVerdict = (typeof MCE_VERDICTS)[number];
export function decodeMceFlags(v5: bigint): { wholeHugePage: boolean; bank: number; verdict: MceVerdict; lmce: boolean; broadcast: boolean; piece: boolean; over: boolean } {
  const n = Number(v5);
  const f = (n >>> 24) & 0xff;
  return { wholeHugePage: (n & 1) === 1, bank: (n >>> 8) & 0xff, verdict: MCE_VERDICTS[(n >>> 16) & 0xff] ?? 'inject', lmce: (f & 1) !== 0, broadcast: (f & 2) !== 0, piece: (f & 4) !== 0, over: (f & 8) !== 0 };
}

export interface SigbusCounters {
  installed: boolean;
  /** The current SIGBUS disposition is still the VMM's (false once the engine chained over it). */
  current: boolean;
  total: number;
  otherThread: number;
  nullUcontext: number;
  /** Action-optional SIGBUSes on a vCPU thread outside KVM_RUN (ignored: nothing re-executes). */
  outsideRun: number;
  lastCode: number;
  lastLsb: number;
  lastAddr: bigint;
}

interface Binding {
  Vm: new (o: NativeVmOptions) => NativeVm;
  installSigbusHandler(): { installed: boolean; anotherHandlerFirst: boolean };
  sigbusCounters(): SigbusCounters;
  kvmAvailable(): { ok: boolean; reason?: string };
}

/** The package root (hugetlb-ras's package.json), from dist/vmm/src or vmm/src. */
export function packageRoot(): string {
  let d = __dirname;
  for (;;) {
    const pj = path.join(d, 'package.json');
    if (fs.existsSync(pj) && (JSON.parse(fs.readFileSync(pj, 'utf8')) as { name?: string }).name === 'hugetlb-ras') return d;
    const up = path.dirname(d);
    if (up === d) throw new Error('ras_vmm: cannot find the package root');
    d = up;
  }
}

function buildFile(name: string): string {
  const root = packageRoot();
  for (const t of ['Release', 'Debug']) {
    const p = path.join(root, 'build', t, name);
    if (fs.existsSync(p)) return p;
  }
  throw new Error(`ras_vmm: build/Release/${name} is missing: run npm install (node-gyp rebuild)`);
}

let binding: Binding | undefined;
export function vmmNative(): Binding {
  if (!binding) binding = require(buildFile('ras_vmm.node')) as Binding;
  return binding;
}

/** The guest's flat binary, built from vmm/guest by the ras_vmm target. */
export function guestImage(): Buffer {
  return fs.readFileSync(buildFile('ras_vmm_guest.bin'));
}
