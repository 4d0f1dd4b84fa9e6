// One run of the reference VMM with poison while the guest runs, summarised for assertions: used
// by the host test (simulated poison), the lab cases (real poison, root and unprivileged) and the demo.
import type { EngineOptions, InjectMode } from '../../src/index';
import { allHaveFlag, type MemLock } from './memlock';
import { ReferenceVmm, defaultRegions, frameOf, type ReferenceVmmOptions, type VmmRegionSpec, type VmmReport } from './vmm';

export interface PoisonTarget { region: string; offset: number }

export interface ScenarioOptions {
  vcpus: number;
  regions?: VmmRegionSpec[];
  targets: PoisonTarget[];
  /** simulate / madvise: injectPoison from the JS thread; external: poisonExternally does it. */
  mode: InjectMode | 'external';
  /** simulate only: false poisons silently; the guest's own access finds it (an exit, then a stall). */
  signal?: boolean;
  /** For mode 'external': poison these host addresses (e.g. root writing hwpoison corrupt-pfn). */
  poisonExternally?: (targets: { hostAddress: bigint; guestPhysAddr: bigint }[]) => Promise<void>;
  /** The whole huge page is expected lost (refused, Linux 6.1): MCEs for any frame touched in it. */
  expectWholeHugePage?: boolean;
  engine?: EngineOptions;
  dir2M?: string;
  dir1G?: string;
  passesBefore?: number;
  passesAfter?: number;
  timeoutMs?: number;
  seed?: bigint;
  /** Lock the guest RAM (mlock / mlock2(MLOCK_ONFAULT)); the result then says whether the recovered
   * huge pages are still locked (VmFlags 'lo' over each of them). */
  memLock?: MemLock;
  /** Tests: a frame the guest's #MC handler reads before it clears MCIP (poison it too: a machine
   * check inside a machine check, which hardware answers with a shutdown). */
  mcTouch?: PoisonTarget;
  /** Take each lost frame out of KVM's memory slots (ReferenceVmm's unmapLost). */
  unmapLost?: boolean;
  /** Tests: a frame the guest's vCPU 0 probes (load, store, RMW) once it knows it lost. */
  probe?: PoisonTarget;
  log?: (msg: string) => void;
  onVmm?: (vmm: ReferenceVmm) => void;
}

export interface ScenarioResult {
  ok: boolean;
  failures: string[];
  vcpus: number;
  targets: { region: string; offset: number; guestPhysAddr: bigint; hostAddress: bigint }[];
  /** Guest-reported machine checks per 4 KiB frame (hex GPA -> count). */
  mcePerFrame: Record<string, number>;
  unexpectedMces: string[];
  passesBefore: number[];
  passesAfter: number[];
  wrongBytes: number;
  efault: number;
  mmioInRam: number;
  eintrSigbus: number;
  eintr: number;
  states: string[];
  errors: string[];
  guard: string;
  report: VmmReport;
  /** With memLock: per poisoned huge page, whether every VMA over it is still locked after recovery. */
  lockedAfter?: { hugePage: string; locked: boolean; vmas: { start: string; end: string; flags: string }[] }[];
  /** Milliseconds the run took (wall clock, for the lab's time budget; never asserted). */
  ms: number;
}

const hex = (v: bigint) => '0x' + v.toString(16);

export async function runScenario(o: ScenarioOptions): Promise<ScenarioResult> {
  const t0 = performance.now(); // monotonic
  const log = o.log ?? (() => {});
  const timeout = o.timeoutMs ?? 120_000;
  const vopts: ReferenceVmmOptions = {
    vcpus: o.vcpus,
    regions: o.regions ?? defaultRegions(),
    engine: o.engine,
    dir2M: o.dir2M,
    dir1G: o.dir1G,
    seed: o.seed,
    memLock: o.memLock,
    unmapLost: o.unmapLost,
  };
  if (o.probe) {
    const spec = vopts.regions!.find((r) => r.name === o.probe!.region);
    if (!spec) throw new Error(`probe: no region ${o.probe.region}`);
    vopts.probeGpa = BigInt(spec.guestPhysAddr) + BigInt(o.probe.offset);
  }
  if (o.mcTouch) {
    const spec = vopts.regions!.find((r) => r.name === o.mcTouch!.region);
    if (!spec) throw new Error(`mcTouch: no region ${o.mcTouch.region}`);
    vopts.mcTouchGpa = BigInt(spec.guestPhysAddr) + BigInt(o.mcTouch.offset);
  }
  const vmm = ReferenceVmm.open(vopts);
  log(`opened: engine, ${vopts.regions!.length} regions, VM with ${o.vcpus} vCPUs`);
  o.onVmm?.(vmm);
  const failures: string[] = [];
  const targets: ScenarioResult['targets'] = [];
  let before: number[] = [];
  let report: VmmReport | undefined;
  let lockedAfter: ScenarioResult['lockedAfter'];
  try {
    vmm.start();
    log(`vmm: ${o.vcpus} vCPUs, guard ${vmm.engine.lostPageGuard}, regions ${[...vmm.regions.keys()].join(', ')}`);
    await vmm.untilPasses(o.passesBefore ?? 1, timeout);
    before = vmm.passes();
    log(`guest filled and verified its memory (passes ${before.join(' ')})`);
    for (const t of o.targets) {
      const r = vmm.region(t.region);
      targets.push({ ...t, guestPhysAddr: r.guestPhysAddr + BigInt(t.offset), hostAddress: r.address + BigInt(t.offset) });
    }
    if (o.mode === 'external') {
      if (!o.poisonExternally) throw new Error('mode external needs poisonExternally');
      await o.poisonExternally(targets.map((t) => ({ hostAddress: t.hostAddress, guestPhysAddr: t.guestPhysAddr })));
    } else {
      for (const t of o.targets) {
        vmm.poison(t.region, t.offset, { mode: o.mode, ...(o.signal === false ? { signal: false } : {}) });
        log(`poisoned ${t.region}+0x${t.offset.toString(16)} (${o.mode})`);
        await vmm.engine.whenIdle({ timeoutMs: timeout });
      }
    }
    // Every lost frame is in some vCPU's slice: the guest touches it within a pass.
    const want = targets.map((t) => frameOf(t.guestPhysAddr));
    try {
      await vmm.waitFor(
        'a machine check for every poisoned frame',
        () => want.every((g) => vmm.guestMces().some((m) => m.gpa === g)),
        timeout,
      );
      const mid = vmm.passes();
      const after = o.passesAfter ?? 2;
      await vmm.waitFor(`${after} more passes on every vCPU`, () => vmm.passes().every((p, i) => p >= mid[i] + after), timeout);
    } catch (e) {
      failures.push((e as Error).message);
    }
    await vmm.engine.whenIdle({ timeoutMs: timeout }).catch((e: Error) => failures.push(`engine not idle: ${e.message}`));
    if (o.memLock && o.memLock !== 'off') {
      // The recovered pages must keep the region's lock (hugetlbfs pages never swap; a VMM that
      // locked its RAM counted on it): every VMA over each poisoned huge page has 'lo'.
      lockedAfter = [];
      for (const t of targets) {
        const spec = (vopts.regions ?? []).find((r) => r.name === t.region)!;
        const hp = spec.pageSize === '1G' ? 1n << 30n : 2n << 20n;
        const start = t.hostAddress - (BigInt(t.offset) % hp);
        // hugetlb VMAs never get 'lo' (mlock skips them; they never swap): 'ht' or 'lo'.
        const v = allHaveFlag(start, start + hp, ['lo', 'ht']);
        lockedAfter.push({ hugePage: hex(start), locked: v.ok, vmas: v.vmas.map((x) => ({ start: hex(x.start), end: hex(x.end), flags: x.flags.join(' ') })) });
        if (!v.ok) failures.push(`recovered huge page at host ${hex(start)} is no longer locked (a VMA over it with neither 'lo' nor 'ht')`);
      }
    }
  } catch (e) {
    failures.push((e as Error).message);
  } finally {
    report = await vmm.stop();
    vmm.close();
  }
  const mcePerFrame: Record<string, number> = {};
  for (const m of report.guestMces) mcePerFrame[hex(m.gpa)] = (mcePerFrame[hex(m.gpa)] ?? 0) + 1;
  const hugeOf = (t: ScenarioResult['targets'][number]) => {
    const spec = (vopts.regions ?? []).find((r) => r.name === t.region)!;
    const hp = spec.pageSize === '1G' ? BigInt(1 << 30) : BigInt(2 << 20);
    return { start: t.guestPhysAddr - (t.guestPhysAddr - spec.guestPhysAddr) % hp, size: hp };
  };
  const expected = new Set(targets.map((t) => hex(frameOf(t.guestPhysAddr))));
  const unexpectedMces = Object.keys(mcePerFrame).filter((g) => {
    if (expected.has(g)) return false;
    if (!o.expectWholeHugePage) return true;
    const gpa = BigInt(g);
    return !targets.some((t) => {
      const h = hugeOf(t);
      return gpa >= h.start && gpa < h.start + h.size;
    });
  });
  const sum = (k: 'wrongBytes' | 'efault' | 'mmioInRam' | 'eintrSigbus' | 'eintr') => report!.vcpus.reduce((a, c) => a + c[k], 0);
  const afterPasses = report.vcpus.map((c) => c.passes);
  const res: ScenarioResult = {
    ok: false,
    failures,
    vcpus: o.vcpus,
    targets,
    mcePerFrame,
    unexpectedMces,
    passesBefore: before,
    passesAfter: afterPasses,
    wrongBytes: sum('wrongBytes'),
    efault: sum('efault'),
    mmioInRam: sum('mmioInRam'),
    eintrSigbus: sum('eintrSigbus'),
    eintr: sum('eintr'),
    states: report.vcpus.map((c) => c.state),
    errors: report.errors.map((e) => `cpu ${e.cpu}: ${e.text}`),
    guard: report.engineGuard,
    report,
    lockedAfter,
    ms: Math.round(performance.now() - t0),
  };
  // The common verdict (the tests assert each part separately as well).
  for (const g of expected) if (mcePerFrame[g] !== 1) failures.push(`frame ${g}: ${mcePerFrame[g] ?? 0} machine checks, expected 1`);
  if (unexpectedMces.length) failures.push(`machine checks for healthy frames: ${unexpectedMces.join(' ')}`);
  if (res.wrongBytes) failures.push(`the guest found ${res.wrongBytes} wrong bytes`);
  if (!res.states.every((s) => s === 'bye')) failures.push(`vCPU states ${res.states.join(' ')}`);
  if (before.length && !afterPasses.every((p, i) => p > before[i])) failures.push('a vCPU did not resume verifying');
  if (res.errors.length) failures.push(...res.errors);
  res.ok = failures.length === 0;
  return res;
}

/** JSON with bigints as hex strings. */
export function toJson(v: unknown, space?: number): string {
  return JSON.stringify(v, (_k, x) => (typeof x === 'bigint' ? hex(x) : x), space);
}
