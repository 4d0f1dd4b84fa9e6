// The reference VMM: guest RAM made of hugetlb-ras regions, N vCPU threads in KVM_RUN (the native
// module), a small guest that fills and verifies its memory, and the engine's C API in the vCPU
// loop. Uses only the package's public API.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { lockGuestRam } from './memlock';
import { RasEngine, type InjectOptions, type Region } from '../../src/index';
import { defaultRegions, type GuestMce, type ReferenceVmmOptions, type VmmRegionSpec, type VmmReport } from './vmm-types';
import { guestImage, vmmNative, type NativeVm, type NativeVmEvent, type NativeVmStats } from './native';
import { recordEvent, type EventReport } from './vmm-report';

const SUB = 4096n;

export * from './vmm-types';

export function kvmAvailable(): { ok: boolean; reason?: string } {
  if (!fs.existsSync('/dev/kvm')) return { ok: false, reason: '/dev/kvm does not exist (no KVM on this machine)' };
  return vmmNative().kvmAvailable();
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export class ReferenceVmm {
  readonly engine: RasEngine;
  readonly regions = new Map<string, Region>();
  readonly vcpus: number;
  /** The regions as opened (a migration stream describes the machine with them). */
  readonly specs: VmmRegionSpec[];
  /** The native machine (vmm/src/migration pauses it, saves and restores its state, reads its dirty log). */
  readonly machine: NativeVm;
  private readonly vm: NativeVm;
  private readonly files: string[] = [];
  private started = false;
  private closed = false;
  private report: EventReport;
  /** Called for every batch of native events (after they are recorded). */
  onEvents?: (e: NativeVmEvent[]) => void;

  private constructor(engine: RasEngine, vm: NativeVm, vcpus: number, regions: Map<string, Region>, files: string[], apiUsed: boolean, specs: VmmRegionSpec[]) {
    this.engine = engine;
    this.vm = vm;
    this.machine = vm;
    this.specs = specs;
    this.vcpus = vcpus;
    this.regions = regions;
    this.files = files;
    this.report = {
      guestMces: [],
      injections: [],
      mceOutcomes: [],
      stalls: [],
      wrong: [],
      errors: [],
      hello: [],
      info: vm.info(),
      engineGuard: String(engine.lostPageGuard),
      apiUsed,
      events: { poison: [], recovered: [], refused: [] },
    };
    engine.on('poison', (e) => this.report.events.poison.push(e));
    engine.on('recovered', (e) => this.report.events.recovered.push(e));
    engine.on('refused', (e) => this.report.events.refused.push(e));
    engine.on('error', (e) => this.report.errors.push({ cpu: -1, text: `engine: ${e.message}` }));
  }

  /** Installs the VMM's SIGBUS handler, then opens the engine, maps the regions and creates the VM. */
  static open(opts: ReferenceVmmOptions = {}): ReferenceVmm {
    const vmm = vmmNative();
    // As QEMU: the VMM's handler first, so the engine chains to it (lost frames only).
    const h = vmm.installSigbusHandler();
    if (h.anotherHandlerFirst)
      throw new Error('another SIGBUS handler (an engine opened before the VMM?) owns SIGBUS: install the VMM\'s handler first, then open the engine, which chains to it');
    if (!h.installed) throw new Error('could not install the VMM SIGBUS handler');
    const engine = RasEngine.open(opts.engine ?? {});
    const root = process.env.HUGETLB_RAS_DIR ?? '/mnt/hugetlb-ras';
    const dirs = { '2M': opts.dir2M ?? path.join(root, '2M'), '1G': opts.dir1G ?? path.join(root, '1G') };
    const specs = opts.regions ?? defaultRegions();
    const regions = new Map<string, Region>();
    const files: string[] = [];
    const vcpus = opts.vcpus ?? 2;
    try {
      for (const s of specs) {
        const file = path.join(dirs[s.pageSize], `vmm-${process.pid}-${s.name}`);
        files.push(file);
        const r = engine.mapRegion({ name: s.name, path: file, size: s.size, guestPhysAddr: s.guestPhysAddr });
        regions.set(s.name, r);
        lockGuestRam(r, opts.memLock ?? 'off');
      }
      const ranges: { gpa: bigint; size: number }[] = [];
      for (const s of opts.restore ? [] : specs) {
        const windows = s.verify ?? [{ offset: 0, size: s.size }];
        for (const w of windows) {
          let start = s.guestPhysAddr + BigInt(w.offset);
          let size = w.size;
          if (start < 0x200000n) {
            const cut = Number(0x200000n - start);
            start += BigInt(cut);
            size -= cut;
          }
          if (size > 0) ranges.push({ gpa: start, size });
        }
      }
      const engineApi = (engine as unknown as { nativeApi?: () => bigint }).nativeApi;
      const api = opts.useApi === false || typeof engineApi !== 'function' ? 0n : engineApi.call(engine);
      const vm = new (vmm.Vm)({
        vcpus,
        seed: opts.seed ?? 0x5eedn,
        api,
        slots: specs.map((s) => ({ gpa: s.guestPhysAddr, size: s.size, hva: regions.get(s.name)!.address })),
        ranges,
        image: guestImage(),
        waitMs: opts.waitMs,
        passEventMs: opts.passEventMs,
        mcTouchGpa: opts.mcTouchGpa,
        unmapLost: opts.unmapLost,
        probeGpa: opts.probeGpa,
        restore: opts.restore === true,
      });
      return new ReferenceVmm(engine, vm, vcpus, regions, files, api !== 0n, specs);
    } catch (e) {
      engine.close();
      for (const f of files) fs.rmSync(f, { force: true });
      throw e;
    }
  }

  start(): void {
    this.started = true;
    this.vm.start(this.sink);
  }

  private readonly sink = (events: NativeVmEvent[]): void => {
    for (const e of events) recordEvent(this.report, e);
    this.onEvents?.(events);
  };

  /** Kicks and joins the vCPU threads and completes their last exits: the state is then consistent (migration). */
  pause(): void {
    this.vm.pause();
  }

  /** Migration: why a vCPU stopped on a fatal exit or an error, or undefined while the guest runs. */
  guestStopped(): string | undefined {
    const bad = this.vm.stats().vcpus.map((c, i) => ({ ...c, i })).filter((c) => c.state === 'fatal' || c.state === 'error');
    return bad.length ? bad.map((c) => `vCPU ${c.i} ${c.state}${c.error ? `: ${c.error}` : ''}`).join('; ') : undefined;
  }

  /** Starts the vCPU threads again after pause() (a migration that did not hand over). */
  resume(): void {
    this.vm.resume(this.sink);
  }

  stats(): NativeVmStats {
    return this.vm.stats();
  }

  region(name: string): Region {
    const r = this.regions.get(name);
    if (!r) throw new Error(`no region ${name}`);
    return r;
  }

  /** Resolves when pred() holds (checked every 10 ms); rejects after timeoutMs. */
  async waitFor(what: string, pred: () => boolean, timeoutMs = 60_000): Promise<void> {
    const t0 = performance.now();
    while (!pred()) {
      const s = this.vm.stats();
      if (s.vcpus.some((c) => c.done)) throw new Error(`waiting for ${what}: a vCPU stopped: ${JSON.stringify(s.vcpus.map((c) => [c.state, c.error]))}`);
      if (performance.now() - t0 > timeoutMs) throw new Error(`timed out waiting for ${what}`);
      await sleep(10);
    }
  }

  /** Every vCPU has filled its slice and completed at least `passes` verification passes. */
  async untilPasses(passes: number, timeoutMs?: number): Promise<void> {
    await this.waitFor(`${passes} passes on every vCPU`, () => this.vm.stats().vcpus.every((c) => c.passes >= passes), timeoutMs);
  }

  passes(): number[] {
    return this.vm.stats().vcpus.map((c) => c.passes);
  }

  /** Poisons guest RAM at regionName+offset through the engine (madvise: real, simulate: the dev machine). */
  poison(regionName: string, offset: number, opts: InjectOptions): { hostAddress: bigint; guestPhysAddr: bigint } {
    const r = this.region(regionName);
    const res = this.engine.injectPoison(r, offset, opts);
    return { hostAddress: res.hostAddress, guestPhysAddr: r.guestPhysAddr + BigInt(offset) };
  }

  guestMces(): GuestMce[] {
    return this.report.guestMces;
  }

  /**
   * Asks the guest to stop (it says BYE), kicks the vCPUs after stopTimeoutMs, joins them. A vCPU
   * thread leaves within kickTimeoutMs of the kick (each engine question is sliced and looks at
   * the kick); if one does not, this throws instead of waiting for ever.
   */
  async stop(stopTimeoutMs = 30_000, kickTimeoutMs = 10_000): Promise<VmmReport> {
    let kicked = false;
    if (this.started) {
      this.vm.requestStop();
      const t0 = performance.now();
      let tKick = 0;
      while (!this.vm.allDone()) {
        if (performance.now() - t0 > stopTimeoutMs && !kicked) {
          kicked = true;
          tKick = performance.now();
          this.vm.kick();
        }
        if (kicked && performance.now() - tKick > kickTimeoutMs)
          throw new Error(`stop(): vCPU threads still running ${kickTimeoutMs} ms after the kick: ${JSON.stringify(this.vm.stats().vcpus.map((c) => [c.state, c.done]))}`);
        await sleep(5);
      }
    }
    const st = this.vm.join();
    // Events queued before the join are delivered on the next turns of the loop.
    for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
    await sleep(20);
    return { ...this.report, vcpus: st.vcpus, duplicateInjections: st.duplicateInjections, sigbus: vmmNative().sigbusCounters(), kicked };
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.vm.dispose();  // kick, join, and the KVM fds closed now
    this.engine.close();
    for (const f of this.files) fs.rmSync(f, { force: true });
  }
}

/** GPA of the frame holding a guest-physical address. */
export function frameOf(gpa: bigint): bigint {
  return gpa & ~(SUB - 1n);
}
