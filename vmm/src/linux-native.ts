// The Linux VM object ras_vmm.node makes (vmm/native/linux_addon.cc) and the stats it returns.
import type { NativeVmEvent } from './native';

export interface LinuxVmStats {
  runs: number; pio: number; pioOther: number; mmioInRam: number; mmioRewound: number; mmioOutside: number;
  efault: number; efaultUnresolved: number; eintr: number; eintrSigbus: number;
  injected: number; injectedAo: number; deferred: number; injectFailed: number; duplicate: number;
  broadcastPieces: number; merged: number; disabled: number; shutdown: number; hwpoison: number; vcpusEntered: number;
  healthy: number; recovering: number; lost: number; notRam: number; consoleBytes: number; controlReads: number;
  state: 'running' | 'reset' | 'triple-fault' | 'error' | 'kicked';
  done: boolean;
  error?: string;
}

export interface NativeLinuxVm {
  start(cb: (events: NativeVmEvent[]) => void): void;
  requestStop(): void;
  injectMce(gpa: bigint, actionRequired: boolean): void;
  kick(): void;
  done(): boolean;
  join(): LinuxVmStats;
  stats(): LinuxVmStats;
  dispose(): void;
  /** Migration (vmm/src/migration), as the bare-metal Vm: kick, join, complete the last exits. */
  pause(): void;
  resume(cb: (events: NativeVmEvent[]) => void): void;
  saveState(): { vcpus: Buffer[]; vm: Buffer };
  restoreState(s: { vcpus: Buffer[]; vm: Buffer }): { msrFailed: number[] };
  dirtyLog(on: boolean): void;
  takeDirty(): Buffer[];
  info(): { vendor: string; mcgCap: bigint; vcpus: number; bootProtocol: number; entry: bigint; entry64: boolean; initrdGpa: bigint; initrdSize: number; kernelSize: number; e820Ram: { gpa: bigint; size: number }[] };
}
