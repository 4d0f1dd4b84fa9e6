// The source side of a migration (live, over a socket) and of a snapshot (the same stream to a
// file): pre-copy rounds with KVM's dirty log while the guest runs, then stop, the last dirty
// frames, the vCPU and VM state, the FINAL manifest (frames lost during pre-copy are in it) and END.
import type { Writable } from 'node:stream';
import type { RasEngine, Region } from '../../../src/index';
import type { VmmRegionSpec } from '../vmm-types';
import { REC, StreamWriter } from './stream';
import { countBits, dirtyRuns, emptyCount, sendFrames, type RamCount } from './ram';
import { exportLost, lostFrames, type LostManifest } from './lost';

/** What migrateOut needs of a VMM: the reference VMM (bare metal) and its Linux mode both have it. */
export interface MigratableVm {
  readonly engine: RasEngine;
  readonly vcpus: number;
  readonly specs: VmmRegionSpec[];
  region(name: string): Region;
  /** Stops the vCPUs: kick, join, each vCPU's last exit completed (one KVM_RUN with immediate_exit). */
  pause(): void;
  readonly machine: { dirtyLog(on: boolean): void; takeDirty(): Buffer[]; saveState(): { vcpus: Buffer[]; vm: Buffer } };
  /** The machine kind in the stream's CONFIG (the destination opens the same kind); default 'bare-metal'. */
  readonly streamKind?: 'bare-metal' | 'linux';
  /** Why the guest stopped by itself (a triple fault, a KVM error, its own shutdown), or undefined while it runs. */
  guestStopped(): string | undefined;
}

/** A guest that stopped by itself is not migrated: the destination would run a dead machine. */
function mustRun(vmm: MigratableVm, when: string): void {
  const why = vmm.guestStopped();
  if (why) throw new Error(`the guest stopped by itself ${when} (${why}): nothing to hand over`);
}

export interface MigrateOutOptions {
  /** Stop the guest first and send everything once (a snapshot); default false (live pre-copy). */
  stopFirst?: boolean;
  /** Pre-copy rounds after the first full pass, at most (default 8). */
  maxRounds?: number;
  /** Stop once a round finds at most this many dirty frames (default 64). */
  stopFrames?: number;
  /** Called after each pre-copy round (tests: poison during pre-copy). */
  afterRound?: (round: number) => Promise<void> | void;
  /** Called with the guest stopped, before the final round (tests: a loss between the rounds). */
  whileStopped?: () => Promise<void> | void;
}

export interface MigrateOutResult {
  rounds: { round: number; dirty: number; ram: RamCount }[];
  final: RamCount;
  /** The manifest sent first (lost before the migration) and the final one. */
  firstManifest: LostManifest;
  manifest: LostManifest;
  stateBytes: number;
  bytes: number;
  /** Wall clock (ms since the epoch, this host) when the vCPUs stopped, and when END was written. */
  pausedAtMs: number;
  endAtMs: number;
  msrCount?: number;
}

export const wallMs = (): number => performance.timeOrigin + performance.now();

async function sendDirty(w: StreamWriter, vmm: MigratableVm, c: RamCount): Promise<number> {
  const maps = vmm.machine.takeDirty();
  let n = 0;
  vmm.specs.forEach((s, i) => {
    n += countBits(maps[i]);
  });
  for (let i = 0; i < vmm.specs.length; i++) {
    const r = vmm.region(vmm.specs[i].name);
    for (const [first, count] of dirtyRuns(maps[i], r.size / 4096)) await sendFrames(w, r, first, count, false, c);
  }
  return n;
}

export async function migrateOut(vmm: MigratableVm, out: Writable, opts: MigrateOutOptions = {}): Promise<MigrateOutResult> {
  const w = new StreamWriter(out);
  await w.header();
  await w.json(REC.CONFIG, {
    kind: vmm.streamKind ?? 'bare-metal',
    vcpus: vmm.vcpus,
    regions: vmm.specs.map((s) => ({ name: s.name, pageSize: s.pageSize, size: s.size, guestPhysAddr: '0x' + s.guestPhysAddr.toString(16) })),
  });
  // What is lost already travels first: the destination guards it before any data arrives.
  mustRun(vmm, 'before the migration');
  const firstManifest = exportLost(vmm.engine);
  await w.json(REC.MANIFEST, firstManifest);
  const rounds: MigrateOutResult['rounds'] = [];
  let pausedAtMs = 0;
  if (opts.stopFirst) {
    vmm.pause();
    pausedAtMs = wallMs();
    mustRun(vmm, 'before the pause');
  } else {
    vmm.machine.dirtyLog(true);
  }
  // The first pass: everything (zero frames skipped: a fresh destination reads zeros).
  const first = emptyCount();
  for (const s of vmm.specs) {
    const r = vmm.region(s.name);
    await sendFrames(w, r, 0, r.size / 4096, true, first);
  }
  rounds.push({ round: 0, dirty: -1, ram: first });
  await opts.afterRound?.(0);
  const final = emptyCount();
  if (!opts.stopFirst) {
    const max = opts.maxRounds ?? 8;
    const limit = opts.stopFrames ?? 64;
    for (let round = 1; round <= max; round++) {
      const c = emptyCount();
      const dirty = await sendDirty(w, vmm, c);
      rounds.push({ round, dirty, ram: c });
      mustRun(vmm, `during pre-copy round ${round}`);
      await opts.afterRound?.(round);
      if (dirty <= limit) break;
    }
    vmm.pause();
    pausedAtMs = wallMs();
    mustRun(vmm, 'before the pause');
    await opts.whileStopped?.();
    await sendDirty(w, vmm, final);
    vmm.machine.dirtyLog(false);
  } else {
    await opts.whileStopped?.();
  }
  const st = vmm.machine.saveState();
  await w.state(st.vcpus, st.vm);
  // The final manifest, read after the last data and after every reported loss was dealt with: a
  // frame lost at any time before this is in it.
  await vmm.engine.whenIdle({ timeoutMs: 120_000 });
  const manifest = exportLost(vmm.engine);
  await w.json(REC.MANIFEST, manifest);
  const endAtMs = wallMs();
  await w.json(REC.END, { rounds: rounds.length, pausedAtMs, endAtMs, lostFrames: lostFrames(manifest) });
  return {
    rounds,
    final,
    firstManifest,
    manifest,
    stateBytes: st.vcpus.reduce((a, b) => a + b.length, 0) + st.vm.length,
    bytes: w.bytes,
    pausedAtMs,
    endAtMs,
  };
}
