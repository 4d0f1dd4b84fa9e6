// The reference VMM's Linux mode: Debian's own kernel (bzImage) with a small initramfs (busybox and
// a memory walker, vmm/linux/), N vCPUs, guest RAM made of hugetlb-ras regions, the serial console
// forwarded line by line. Poison a frame under the walker, let the engine recover the huge page,
// let the guest kernel handle the machine check for the lost 4 KiB, watch the walker carry on.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { RasEngine, type EngineOptions, type InjectMode, type Region, type RecoveredEvent } from '../../src/index';
import { EV_ERROR, EV_INJECTED, EV_STALL, PATH_NAMES, decodeMceFlags, vmmNative, type NativeVmEvent } from './native';
import { findKernel, initramfs, linuxRegions } from './linux-image';
import type { LinuxVmStats, NativeLinuxVm } from './linux-native';
import { GuestConsole, type ConsoleLine, type Heartbeat, type WalkerBye, type WalkerSigbus, type WalkerTarget } from './linux-console';
import { lockGuestRam } from './memlock';
import { type VmmRegionSpec } from './vmm';

export { findKernel, initramfs, linuxRegions };
export type { ConsoleLine, Heartbeat, LinuxVmStats, WalkerSigbus, WalkerTarget };

export const EV_CONSOLE = 10;
export const EV_EXIT = 11;

const hex = (v: bigint | number) => '0x' + v.toString(16);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export interface LinuxInjection { ms: number; cpu: number; gpa: bigint; path: string; ar: boolean; status: bigint; mcgStatus: bigint; misc: bigint; errno: number; bank: number; broadcast: boolean; lmce: boolean }
/** Not a delivered machine check: a deferred AO, a broadcast piece, a merged piece, a shutdown. */
export interface LinuxMceOutcome { ms: number; cpu: number; gpa: bigint; kind: string; verdict: string; bank: number; errno: number }

export interface LinuxGuestOptions {
  kernel?: string;
  initrd?: string;
  regions?: VmmRegionSpec[];
  dir2M?: string;
  dir1G?: string;
  engine?: EngineOptions;
  /** Share of the guest's MemAvailable the walker fills (percent). */
  walkerPercent?: number;
  /** Pause between the walker's passes (ms). */
  walkerIntervalMs?: number;
  /** Kernel console log level (5: warnings and worse, which includes the machine-check lines; 7: all). */
  loglevel?: number;
  extraCmdline?: string;
  /** Boot through the 64-bit entry (long mode, default) or the 32-bit one (flat protected mode). */
  entry?: 64 | 32;
  waitMs?: number;
  /** vCPUs (the guest finds them in an MP table; the walker runs one worker per CPU). Default 1. */
  vcpus?: number;
  /** Lock the guest RAM (mlock / mlock2(MLOCK_ONFAULT)), as QEMU's -overcommit mem-lock=on|on-fault. */
  memLock?: 'off' | 'on' | 'on-fault';
  /** A migration destination (vmm/src/migration): no kernel loaded, nothing booted; the RAM and the
   * state come from the stream (restoreState), then start(). */
  restore?: boolean;
  /** Every console line, engine event and VMM action, as it happens (the demo prints them). */
  onLine?: (source: 'guest' | 'engine' | 'vmm', text: string) => void;
}

export class LinuxGuest {
  readonly engine: RasEngine;
  readonly regions = new Map<string, Region>();
  readonly cmdline: string;
  /** The console and what the walker and the guest kernel said in it (linux-console.ts). */
  readonly guestConsole = new GuestConsole();
  readonly injections: LinuxInjection[] = [];
  readonly mceOutcomes: LinuxMceOutcome[] = [];
  readonly recovered: RecoveredEvent[] = [];
  readonly errors: string[] = [];
  exit?: { state: string; ms: number };
  /** The native machine (vmm/src/migration saves and restores its state, reads its dirty log). */
  readonly machine: NativeLinuxVm;
  readonly vcpus: number;
  /** The regions as opened (a migration stream describes the machine with them). */
  readonly specs: VmmRegionSpec[];
  readonly streamKind = 'linux' as const;
  private readonly vm: NativeLinuxVm;
  private readonly files: string[];
  private readonly restored: boolean;
  private paused = false;
  private readonly onLine: NonNullable<LinuxGuestOptions['onLine']>;
  private started = false;
  private closed = false;
  readonly t0 = Date.now();

  private constructor(engine: RasEngine, vm: NativeLinuxVm, regions: Map<string, Region>, files: string[], specs: VmmRegionSpec[], cmdline: string, onLine: LinuxGuestOptions['onLine'], vcpus: number, restored: boolean) {
    this.engine = engine;
    this.vm = vm;
    this.machine = vm;
    this.vcpus = vcpus;
    this.restored = restored;
    this.regions = regions;
    this.files = files;
    this.specs = specs;
    this.cmdline = cmdline;
    this.onLine = onLine ?? (() => {});
    engine.on('recovered', (e) => {
      this.recovered.push(e);
      this.onLine('engine', `recovered ${e.region} huge page #${e.hugePageIndex} (${hex(e.hugePageGuestPhysAddr)}): lost ${e.lostGuestPhysAddrs.map(hex).join(' ')}, guard ${e.guard}, ${(Number(e.totalNs) / 1e6).toFixed(2)} ms`);
    });
    engine.on('poison', (e) => this.onLine('engine', `poison ${e.kind} at ${e.region}+${hex(e.offset)} (gpa ${hex(e.guestPhysAddr)})${e.alreadyLost ? ', already lost' : ''}`));
    engine.on('refused', (e) => this.onLine('engine', `refused ${e.region} #${e.hugePageIndex}: ${e.reason}`));
    engine.on('error', (e) => this.errors.push(`engine: ${e.message}`));
  }

  get console(): ConsoleLine[] { return this.guestConsole.lines; }
  get targets(): WalkerTarget[] { return this.guestConsole.targets; }
  get heartbeats(): Heartbeat[] { return this.guestConsole.heartbeats; }
  get sigbus(): WalkerSigbus[] { return this.guestConsole.sigbus; }
  get bye(): WalkerBye | undefined { return this.guestConsole.bye; }

  static open(o: LinuxGuestOptions = {}): LinuxGuest {
    const kernel = o.restore ? '' : (o.kernel ?? findKernel() ?? '');
    if (!kernel && !o.restore) throw new Error('no Linux kernel: set RAS_LINUX_KERNEL or run the lab once (lab/cache/kernels/6.12/*/vmlinuz)');
    const initrd = o.restore ? '' : o.initrd ?? initramfs();
    const native = vmmNative() as unknown as { installSigbusHandler(): { installed: boolean; anotherHandlerFirst: boolean }; LinuxVm: new (x: unknown) => NativeLinuxVm };
    const h = native.installSigbusHandler();
    if (h.anotherHandlerFirst) throw new Error('another SIGBUS handler owns SIGBUS: install the VMM\'s handler first, then open the engine');
    if (!h.installed) throw new Error('could not install the VMM SIGBUS handler');
    const engine = RasEngine.open(o.engine ?? {});
    const root = process.env.HUGETLB_RAS_DIR ?? '/mnt/hugetlb-ras';
    const dirs = { '2M': o.dir2M ?? path.join(root, '2M'), '1G': o.dir1G ?? path.join(root, '1G') };
    const specs = o.regions ?? linuxRegions();
    const regions = new Map<string, Region>();
    const files: string[] = [];
    const cmdline = [
      'earlyprintk=serial,ttyS0,115200 keep_bootcon printk.devkmsg=on',
      `loglevel=${o.loglevel ?? 5}`,
      'acpi=off pci=off lpj=5000000 no_timer_check reboot=k panic=-1 nokaslr',
      `walker.percent=${o.walkerPercent ?? 60} walker.interval=${o.walkerIntervalMs ?? 2000}`,
      o.extraCmdline ?? '',
    ].join(' ').trim();
    try {
      for (const s of specs) {
        const file = path.join(dirs[s.pageSize], `linux-${process.pid}-${s.name}`);
        files.push(file);
        const r = engine.mapRegion({ name: s.name, path: file, size: s.size, guestPhysAddr: s.guestPhysAddr });
        regions.set(s.name, r);
        lockGuestRam(r, o.memLock ?? 'off');
      }
      const vm = new native.LinuxVm({
        api: engine.nativeApi(),
        slots: specs.map((s) => ({ gpa: s.guestPhysAddr, size: s.size, hva: regions.get(s.name)!.address })),
        kernel: o.restore ? undefined : fs.readFileSync(kernel),
        initrd: o.restore ? undefined : fs.readFileSync(initrd),
        restore: o.restore === true,
        cmdline,
        entry64: (o.entry ?? 64) === 64,
        waitMs: o.waitMs,
        vcpus: o.vcpus ?? 1,
      });
      return new LinuxGuest(engine, vm, regions, files, specs, cmdline, o.onLine, o.vcpus ?? 1, o.restore === true);
    } catch (e) {
      engine.close();
      for (const f of files) fs.rmSync(f, { force: true });
      throw e;
    }
  }

  info(): ReturnType<NativeLinuxVm['info']> {
    return this.vm.info();
  }

  stats(): LinuxVmStats {
    return this.vm.stats();
  }

  region(name: string): Region {
    const r = this.regions.get(name);
    if (!r) throw new Error(`no region ${name}`);
    return r;
  }

  private readonly sink = (events: NativeVmEvent[]) => {
    for (const e of events) this.record(e);
  };

  /** Migration: the vCPUs stop (kick, join, each vCPU's last exit completed); resume() or close() next. */
  pause(): void {
    this.paused = true;
    this.vm.pause();
    this.onLine('vmm', 'vCPUs paused');
  }

  /** Migration: why the guest stopped by itself (triple fault, KVM error, its own reset), or undefined. */
  guestStopped(): string | undefined {
    const s = this.vm.stats();
    return s.state === 'running' || s.state === 'kicked' ? undefined : s.state + (s.error ? `: ${s.error}` : '');
  }

  /** After pause(): the same vCPUs run again (a migration that did not hand over). */
  resume(): void {
    this.paused = false;
    this.exit = undefined;
    this.vm.resume(this.sink);
    this.onLine('vmm', 'vCPUs resumed');
  }

  start(): void {
    this.started = true;
    if (this.restored) {
      this.onLine('vmm', `restored ${this.vcpus} vCPUs from the stream; running`);
      this.vm.start(this.sink);
      return;
    }
    const i = this.vm.info();
    this.onLine('vmm', `boot protocol 2.${(i.bootProtocol & 0xff).toString().padStart(2, '0')}, ${i.entry64 ? '64-bit' : '32-bit'} entry ${hex(i.entry)}, initrd at ${hex(i.initrdGpa)}, e820 RAM ${i.e820Ram.map((r) => `[${hex(r.gpa)}, ${hex(r.gpa + BigInt(r.size))})`).join(' ')}`);
    this.onLine('vmm', `command line: ${this.cmdline}`);
    this.vm.start(this.sink);
  }

  private record(e: NativeVmEvent): void {
    const ms = Date.now() - this.t0;
    if (e.type === EV_CONSOLE) {
      const text = e.text ?? '';
      this.guestConsole.add(ms, text);
      this.onLine('guest', text);
    } else if (e.type === EV_INJECTED) {
      const v = e.v;
      const f = decodeMceFlags(v[5]);
      if (f.verdict !== 'inject' || f.piece) {
        this.mceOutcomes.push({ ms, cpu: e.cpu, gpa: v[0], kind: e.text ?? '', verdict: f.verdict, bank: f.bank, errno: Number(v[7]) });
        this.onLine('vmm', `vCPU ${e.cpu}: machine check ${e.text} for gpa ${hex(v[0])}: ${f.verdict}${f.piece ? ` (broadcast piece, bank ${f.bank})` : ''}`);
        return;
      }
      const inj: LinuxInjection = { ms, cpu: e.cpu, gpa: v[0], path: PATH_NAMES[Number(v[1])] ?? 'vmm', ar: e.text === 'AR', status: v[2], mcgStatus: v[3], misc: v[4], errno: Number(v[7]), bank: f.bank, broadcast: f.broadcast, lmce: f.lmce };
      this.injections.push(inj);
      this.onLine('vmm', `vCPU ${inj.cpu}: machine check ${inj.ar ? 'AR' : 'AO'} injected for gpa ${hex(inj.gpa)} (pfn ${hex(inj.gpa >> 12n)}) via ${inj.path}: bank ${inj.bank} MCi_STATUS ${hex(inj.status)} MCG_STATUS ${hex(inj.mcgStatus)} MCi_MISC ${hex(inj.misc)}${inj.broadcast ? ', broadcast' : ''}${inj.lmce ? ', LMCE' : ''}${inj.errno ? ` FAILED errno ${inj.errno}` : ''}`);
    } else if (e.type === EV_STALL) {
      this.onLine('vmm', `vCPU stalled ${(Number(e.v[2]) / 1e6).toFixed(2)} ms on ${PATH_NAMES[Number(e.v[0])]} ${hex(e.v[1])}: ${['not-ram', 'healthy', 'recovering', 'lost'][Number(e.v[3])]}`);
    } else if (e.type === EV_ERROR) {
      this.errors.push(e.text ?? 'error');
      this.onLine('vmm', `error: ${e.text}`);
    } else if (e.type === EV_EXIT && this.paused) {
      // the pause's own kick: not the guest's end
    } else if (e.type === EV_EXIT) {
      const st = ['running', 'reset', 'triple-fault', 'error', 'kicked'][Number(e.v[0])] ?? 'unknown';
      this.exit = { state: st, ms: Number(e.v[1] / 1000000n) };
      this.onLine('vmm', `vCPUs left: ${st} after ${(this.exit.ms / 1000).toFixed(1)} s`);
    }
  }

  async waitFor(what: string, pred: () => boolean, timeoutMs: number): Promise<void> {
    const t0 = Date.now();
    while (!pred()) {
      if (this.vm.done()) {
        await sleep(50); // let the last events arrive
        if (pred()) return;
        throw new Error(`waiting for ${what}: the guest stopped (${this.vm.stats().state}${this.vm.stats().error ? ': ' + this.vm.stats().error : ''})`);
      }
      if (Date.now() - t0 > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
      await sleep(10);
    }
  }

  /** The region and offset holding a guest-physical address. */
  where(gpa: bigint): { region: Region; offset: number } {
    for (const s of this.specs) {
      if (gpa >= s.guestPhysAddr && gpa < s.guestPhysAddr + BigInt(s.size)) return { region: this.regions.get(s.name)!, offset: Number(gpa - s.guestPhysAddr) };
    }
    throw new Error(`gpa ${hex(gpa)} is not guest RAM`);
  }

  poison(gpa: bigint, mode: InjectMode): void {
    const { region, offset } = this.where(gpa);
    this.onLine('vmm', `poisoning gpa ${hex(gpa)} (${region.name}+${hex(offset)}, pfn ${hex(gpa >> 12n)}) with ${mode}`);
    this.engine.injectPoison(region, offset, { mode });
  }

  /** A machine check the VMM decides on itself (e.g. AO for a lost frame the guest has not touched). */
  injectMce(gpa: bigint, actionRequired: boolean): void {
    this.vm.injectMce(gpa, actionRequired);
  }

  /** Lines of the guest's own log about a pfn (memory-failure handling, the machine check). */
  kernelLinesFor(pfn: bigint): string[] {
    return this.guestConsole.kernelLinesFor(pfn);
  }

  /** Asks the walker to stop; resolves with the final stats once the guest has reset (or was kicked). */
  async stop(timeoutMs = 60_000): Promise<LinuxVmStats> {
    if (this.started) {
      this.vm.requestStop();
      const t0 = Date.now();
      let kickedAt = 0;
      while (!this.vm.done()) {
        if (!kickedAt && Date.now() - t0 > timeoutMs) {
          this.errors.push(`the guest did not shut down within ${timeoutMs} ms`);
          kickedAt = Date.now();
          this.vm.kick();
        }
        // A kick is seen within one engine-question slice: never wait on it for ever.
        if (kickedAt && Date.now() - kickedAt > 10_000) throw new Error('stop(): vCPU threads still running 10 s after the kick');
        await sleep(10);
      }
    }
    const st = this.vm.join();
    for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
    await sleep(20);
    return st;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.vm.dispose(); // kick, join, and the KVM fds closed now
    this.engine.close();
    for (const f of this.files) fs.rmSync(f, { force: true });
  }
}
