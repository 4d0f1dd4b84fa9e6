// The Linux guest's live migration between two VMM processes (the lab's case L3):
//   node dist/vmm/src/linux-migrate-main.js dest   '{"socket": "/tmp/x.sock"}'
//   node dist/vmm/src/linux-migrate-main.js source '{"socket": "/tmp/x.sock", "mode": "madvise"}'
// The source boots the guest, poisons one frame under its walker (the walker touches it: AR, the
// guest kernel recovers), then migrates over the socket (vmm/src/migration, the same stream as the
// bare-metal VMM). The destination opens the Linux VM without booting it, imports the manifest,
// receives RAM, restores the vCPUs, irqchip, PIT, clock and devices and runs it; the walker must
// keep verifying with wrong=0 and the same lost count. Each prints its guest's console as
// "<role> guest │ ..." lines and ends with "RESULT <json>".
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import type { InjectMode, Region } from '../../src/index';
import { LinuxGuest, type Heartbeat } from './linux';
import { receiveMigration, sendMigration } from './migration/live';
import type { VmmRegionSpec } from './vmm-types';

const hex = (v: bigint) => '0x' + v.toString(16);

interface Opts {
  socket: string;
  mode?: InjectMode;
  vcpus?: number;
  intervalMs?: number;
  timeoutMs?: number;
  loglevel?: number;
  /** Diagnostics: the guest RAM at the pause (source, <dump>.src) and before the vCPUs run (destination, <dump>.dst). */
  dump?: string;
}

function common(role: string) {
  const tag = { guest: 'guest  │', engine: 'engine │', vmm: 'vmm    │' };
  return {
    engine: process.env.RAS_LINUX_ENGINE ? JSON.parse(process.env.RAS_LINUX_ENGINE) : undefined,
    dir2M: process.env.RAS_LINUX_DIR2M,
    onLine: (src: 'guest' | 'engine' | 'vmm', text: string) => process.stdout.write(`${role} ${tag[src]} ${text}\n`),
  };
}

type Beat = { pass: number; lost: number; wrong: number; hwCorruptedKb?: number };

/** The last heartbeat of each walker worker: worker -> { pass, lost, wrong, the guest's HardwareCorrupted }. */
function lastBeats(hb: Heartbeat[]): Record<number, Beat> {
  const out: Record<number, Beat> = {};
  for (const h of hb) out[h.worker] = { pass: h.pass, lost: h.lost, wrong: h.wrong, hwCorruptedKb: h.hwCorruptedKb };
  return out;
}

/** A digest of every MiB of guest RAM (through the guarded copy: a lost frame reads as zeros). */
function ramDigest(regions: Iterable<Region>, dump?: string): Record<string, string> {
  const out: Record<string, string> = {};
  const fd = dump ? fs.openSync(dump, 'w') : -1;
  try {
    for (const r of regions)
      for (let off = 0; off < r.size; off += 1 << 20) {
        const data = r.readAvailable(off, 1 << 20).data;
        out[hex(r.guestPhysAddr + BigInt(off))] = createHash('sha1').update(data).digest('hex').slice(0, 16);
        if (fd >= 0) fs.writeSync(fd, data);
      }
  } finally {
    if (fd >= 0) fs.closeSync(fd);
  }
  return out;
}

/**
 * Frames KVM itself writes for the guest, named by the vCPUs' MSRs in the state: the wall clock
 * (MSR_KVM_WALL_CLOCK[_NEW], a plain GPA: KVM writes it during KVM_SET_MSRS at the destination),
 * and, where enabled (bit 0), kvmclock, async PF, steal time and PV EOI.
 */
function kvmOwnedFrames(vcpus: Buffer[]): string[] {
  const wallClock = new Set([0x11, 0x4b564d00]);
  const msrs = new Set([0x12, 0x4b564d01, 0x4b564d02, 0x4b564d03, 0x4b564d04]);
  const out = new Set<string>();
  for (const b of vcpus)
    for (let o = 0; o + 8 <= b.length; ) {
      const tag = b.readUInt32LE(o);
      const n = b.readUInt32LE(o + 4);
      if (tag === 6)
        for (let k = o + 8; k + 16 <= o + 8 + n; k += 16)
          if ((wallClock.has(b.readUInt32LE(k)) && b.readBigUInt64LE(k + 8)) || (msrs.has(b.readUInt32LE(k)) && b.readBigUInt64LE(k + 8) & 1n))
            out.add(hex(b.readBigUInt64LE(k + 8) & ~0xfffn));
      o += 8 + n;
    }
  return [...out].sort();
}

const lostGpas = (g: LinuxGuest) => g.engine.lostPages().map((l) => hex(l.guestPhysAddr)).sort();

async function source(o: Opts): Promise<unknown> {
  const timeout = o.timeoutMs ?? 120_000;
  const g = LinuxGuest.open({ ...common('source'), vcpus: o.vcpus ?? 1, walkerIntervalMs: o.intervalMs ?? 2000, loglevel: o.loglevel });
  try {
    g.start();
    await g.waitFor('the walker\'s first heartbeat', () => g.heartbeats.length >= 1 && g.targets.length >= 1, 300_000);
    const tg = g.targets[0];
    const hb = g.heartbeats.length;
    await g.waitFor('a heartbeat', () => g.heartbeats.length > hb, timeout);
    g.poison(tg.gpa, o.mode ?? 'madvise');
    await g.engine.whenIdle({ timeoutMs: timeout });
    await g.waitFor(`the guest's memory-failure handling of pfn ${hex(tg.pfn)}`, () => g.kernelLinesFor(tg.pfn).some((l) => / recovery action for /.test(l)) && g.sigbus.some((s) => s.pfn === tg.pfn), timeout);
    const n = g.heartbeats.length;
    await g.waitFor('2 heartbeats after the machine check', () => g.heartbeats.length >= n + 2 * g.vcpus, timeout);
    const atMove = {
      target: { name: tg.name, gpa: hex(tg.gpa), pfn: hex(tg.pfn) },
      kernelLines: g.kernelLinesFor(tg.pfn),
      walkerSigbus: g.sigbus.map((s) => ({ kind: s.kind, pfn: hex(s.pfn), page: s.page })),
      injections: g.injections.map((x) => ({ cpu: x.cpu, gpa: hex(x.gpa), ar: x.ar, path: x.path })),
      beats: lastBeats(g.heartbeats),
      wrong: g.heartbeats.reduce((a, h) => a + h.wrong, 0),
      lostAtSource: lostGpas(g),
    };
    let digest: Record<string, string> = {};
    // A second frame is lost with the guest stopped (another walker worker's target, in another huge
    // page): nobody can tell this guest any more, so the destination must (an AO when it starts).
    const t2 = g.targets.find((t) => t.name.slice(1) !== tg.name.slice(1) && t.gpa >> 21n !== tg.gpa >> 21n);
    if (!t2) throw new Error(`no second walker target outside ${tg.name}'s worker and huge page: ${JSON.stringify(g.targets.map((t) => t.name))}`);
    let lostAtPause: string[] = [];
    const whileStopped = async (): Promise<void> => {
      g.poison(t2.gpa, o.mode ?? 'madvise');
      await g.engine.whenIdle({ timeoutMs: timeout });
      lostAtPause = lostGpas(g);
      // RAM as the guest left it (nothing writes it while the vCPUs are stopped): the destination's
      // digest before its vCPUs run must be the same.
      digest = ramDigest(g.regions.values(), o.dump ? o.dump + '.src' : undefined);
    };
    const res = await sendMigration(g, o.socket, { whileStopped });
    return {
      ok: true,
      ...atMove,
      lostWhileStopped: { name: t2.name, worker: Number(t2.name.slice(1)), gpa: hex(t2.gpa), pfn: hex(t2.pfn) },
      lostAtPause,
      injectionsAtPause: g.injections.map((x) => ({ cpu: x.cpu, gpa: hex(x.gpa), ar: x.ar, path: x.path })),
      rounds: res.rounds.map((r) => ({ round: r.round, dirty: r.dirty, sent: r.ram.sent, lost: r.ram.lost })),
      final: res.final,
      manifest: res.manifest,
      stateBytes: res.stateBytes,
      bytes: res.bytes,
      pausedAtMs: res.pausedAtMs,
      digest,
      errors: g.errors,
      console: g.console.map((l) => l.text).filter((t) => /mce: |Memory failure: |walker: (SIGBUS|target)/.test(t)),
    };
  } catch (e) {
    g.close();
    throw e;
  }
}

async function dest(o: Opts): Promise<unknown> {
  const timeout = o.timeoutMs ?? 120_000;
  const c = common('dest');
  let digest: Record<string, string> = {};
  let kvmOwned: string[] = [];
  const res = await receiveMigration(o.socket, {}, () => process.stdout.write('LISTENING\n'), (cfg: { kind: string; vcpus: number; regions: VmmRegionSpec[] }) => {
    if (cfg.kind !== 'linux') throw new Error(`a ${cfg.kind} VM's stream: this destination opens Linux VMs`);
    const lg = LinuxGuest.open({ ...c, restore: true, vcpus: cfg.vcpus, regions: cfg.regions });
    // The RAM as received, before the vCPUs run.
    return Object.assign(Object.create(lg) as LinuxGuest, {
      machine: { restoreState: (st: { vcpus: Buffer[]; vm: Buffer }) => ((kvmOwned = kvmOwnedFrames(st.vcpus)), lg.machine.restoreState(st)) },
      start: () => {
      digest = ramDigest(lg.regions.values(), o.dump ? o.dump + '.dst' : undefined);
      process.stdout.write(`DIGEST ${JSON.stringify({ digest, kvmOwned })}\n`);
      lg.start();
    } });
  });
  const g = Object.getPrototypeOf(res.vmm) as LinuxGuest;
  try {
    const lostHere = lostGpas(g);
    const guarded: string[] = [];
    for (const r of g.regions.values()) for (const off of r.readAvailable(0, r.size).lostOffsets) guarded.push(hex(r.guestPhysAddr + BigInt(off)));
    // Every worker verifies two whole passes here.
    await g.waitFor('2 heartbeats of every walker worker after the move', () => new Set(g.heartbeats.map((h) => h.worker)).size >= g.vcpus && [...new Set(g.heartbeats.map((h) => h.worker))].every((w) => g.heartbeats.filter((h) => h.worker === w).length >= 2), timeout);
    const beats = lastBeats(g.heartbeats);
    // Frames the guest was never told of at the source (lost while it was stopped): the restored VM
    // gives each an AO when it starts (vCPU 0, path next-lost); the guest kernel handles it.
    const untold = g.injections.filter((x) => x.path === 'next-lost').map((x) => hex(x.gpa));
    for (const u of untold) await g.waitFor(`the guest's memory-failure handling of ${u}`, () => g.kernelLinesFor(BigInt(u) >> 12n).some((l) => / recovery action for /.test(l)), timeout).catch(() => undefined);
    const untoldLines = Object.fromEntries(untold.map((u) => [u, g.kernelLinesFor(BigInt(u) >> 12n)]));
    const nb = g.heartbeats.length;
    await g.waitFor('a heartbeat of every worker after that', () => g.heartbeats.length >= nb + g.vcpus, timeout).catch(() => undefined);
    const beatsAfterUntold = lastBeats(g.heartbeats);
    // The guest kernel's memory-failure state moved with its RAM (PG_hwpoison of the frame's struct
    // page): an action-optional report for a frame it was told of at the source finds it already poisoned.
    const again = lostHere.find((x) => !untold.includes(x));
    let againLines: string[] = [];
    if (again) {
      const gpa = BigInt(again);
      g.injectMce(gpa, false);
      await g.waitFor(`the guest's answer to a machine check for ${again}`, () => g.kernelLinesFor(gpa >> 12n).length > 0, 30_000).catch(() => undefined);
      againLines = g.kernelLinesFor(gpa >> 12n);
      const n = g.heartbeats.length;
      await g.waitFor('a heartbeat after that', () => g.heartbeats.length > n, timeout).catch(() => undefined);
    }
    // The guest kernel's HardwareCorrupted after that: the same as before the move (nothing counted twice).
    const hwCorruptedKbAfterAgain = g.heartbeats.at(-1)?.hwCorruptedKb;
    const stats = await g.stop();
    return {
      ok: true,
      imports: res.imports,
      frames: res.frames,
      skippedLost: res.skippedLost,
      msrFailed: res.msrFailed.map((m) => '0x' + m.toString(16)),
      downtimeMs: res.runningAtMs - res.end.pausedAtMs,
      digest,
      kvmOwned,
      lostHere,
      lostCauses: g.engine.lostPages().map((l) => l.cause),
      guarded: guarded.sort(),
      beats,
      untold,
      untoldLines,
      beatsAfterUntold,
      walkerSigbus: g.sigbus.map((x) => ({ kind: x.kind, pfn: hex(x.pfn), page: x.page })),
      heartbeats: g.heartbeats.length,
      wrong: g.heartbeats.reduce((a, h) => a + h.wrong, 0) + (g.bye?.wrong ?? 0),
      bye: g.bye,
      exit: g.exit,
      stats,
      injections: g.injections.map((x) => ({ cpu: x.cpu, gpa: hex(x.gpa), ar: x.ar, path: x.path })),
      againLines,
      hwCorruptedKbAfterAgain,
      errors: g.errors,
      guestLines: g.console.map((l) => l.text).filter((t) => /mce: |Memory failure: |walker: (SIGBUS|bye|worker \d+ done)|Kernel panic|BUG: |Oops|WARNING: CPU|watchdog|rcu: /.test(t)),
      consoleHead: g.console.slice(0, 12).map((l) => l.text),
    };
  } finally {
    g.close();
  }
}

function finish(line: string, code: number): void {
  process.stdout.write(line + '\n', () => process.exit(code));
}

async function main(): Promise<void> {
  const role = process.argv[2];
  const o = JSON.parse(process.argv[3] ?? '{}') as Opts;
  const r = role === 'source' ? await source(o) : role === 'dest' ? await dest(o) : null;
  if (r === null) throw new Error(`role must be source or dest, not ${role}`);
  finish(`RESULT ${JSON.stringify(r, (_k, v) => (typeof v === 'bigint' ? '0x' + v.toString(16) : v))}`, 0);
}

main().catch((e) => {
  const text = String(e && e.stack ? e.stack : e);
  process.stderr.write(`linux migration ${process.argv[2]}: ${text}\n`);
  finish(`RESULT ${JSON.stringify({ ok: false, error: text })}`, 1);
});
