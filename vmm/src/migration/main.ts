// One side of a migration in its own process (lab cases, the demo, the benchmark):
//   node dist/vmm/src/migration/main.js source '<json SourceOptions>'
//   node dist/vmm/src/migration/main.js dest '<json DestOptions>'
// The destination prints "LISTENING" when its socket is up; both print "GUEST ..." lines for what
// the guest reported and "RESULT <json>" at the end. With poison mode 'external' the source prints
// "POISON-READY <json>" and waits for "POISONED" on stdin (root poisons through corrupt-pfn).
import * as readline from 'node:readline';
import { ReferenceVmm, frameOf } from '../vmm';
import type { VmmRegionSpec } from '../vmm-types';
import type { EngineOptions } from '../../../src/index';
import { toJson } from '../scenario';
import { EV_GUEST, GUEST_BYE, GUEST_MCE, GUEST_PASS, GUEST_HELLO, type NativeVmEvent } from '../native';
import { receiveMigration, restoreSnapshot, saveSnapshot, sendMigration } from './live';
import type { MigrateOutOptions } from './source';

export interface Target { region: string; offset: number }
export interface SourceOptions {
  vcpus: number;
  regions: VmmRegionSpec[];
  dir2M?: string;
  engine?: EngineOptions;
  mode: 'madvise' | 'simulate' | 'external';
  /** Poisoned while the guest runs, before the migration; the guest takes their machine checks here. */
  before?: Target[];
  /** Poisoned after the first pre-copy pass (the guest still runs). */
  precopy?: Target[];
  /** Poisoned with the guest stopped, before the final round: never seen by the guest here. */
  stopped?: Target[];
  socket?: string;
  snapshot?: string;
  timeoutMs?: number;
}
export interface DestOptions { socket?: string; snapshot?: string; dir2M?: string; engine?: EngineOptions; passes?: number; expectMces?: string[]; timeoutMs?: number }

const hex = (v: bigint) => '0x' + v.toString(16);
const out = (l: string) => process.stdout.write(l + '\n');
const lines = readline.createInterface({ input: process.stdin });
const waiting: ((l: string) => void)[] = [];
lines.on('line', (l) => waiting.shift()?.(l));

function guestWords(side: string): (events: NativeVmEvent[]) => void {
  return (events) => {
    for (const e of events) {
      if (e.type !== EV_GUEST) continue;
      const v = e.v;
      if (v[0] === GUEST_HELLO) out(`GUEST ${side} vCPU ${e.cpu}: HELLO MCG_CAP ${hex(v[1])} CR4 ${hex(v[2])} banks ${v[3]}`);
      else if (v[0] === GUEST_PASS) out(`GUEST ${side} vCPU ${e.cpu}: PASS ${v[1]} frames verified ${v[2]} wrong bytes ${v[3]}`);
      else if (v[0] === GUEST_MCE) out(`GUEST ${side} vCPU ${e.cpu}: #MC MCi_ADDR ${hex(v[1])} MCi_STATUS ${hex(v[2])} MCG_STATUS ${hex(v[3])} bank ${v[5]}`);
      else if (v[0] === GUEST_BYE) out(`GUEST ${side} vCPU ${e.cpu}: BYE passes ${v[1]} frames verified ${v[2]} wrong bytes ${v[3]}`);
    }
  };
}

async function poison(vmm: ReferenceVmm, o: SourceOptions, targets: Target[] | undefined): Promise<{ gpa: string; hva: string }[]> {
  const done: { gpa: string; hva: string }[] = [];
  if (!targets?.length) return done;
  if (o.mode === 'external') {
    const list = targets.map((t) => {
      const r = vmm.region(t.region);
      return { hostAddress: r.address + BigInt(t.offset), guestPhysAddr: r.guestPhysAddr + BigInt(t.offset) };
    });
    out(`POISON-READY ${toJson({ pid: process.pid, targets: list })}`);
    const l = await new Promise<string>((r) => waiting.push(r));
    if (l.trim() !== 'POISONED') throw new Error(`external poison failed: ${l}`);
    for (const x of list) done.push({ gpa: hex(x.guestPhysAddr), hva: hex(x.hostAddress) });
  } else {
    for (const t of targets) {
      const p = vmm.poison(t.region, t.offset, { mode: o.mode });
      done.push({ gpa: hex(p.guestPhysAddr), hva: hex(p.hostAddress) });
    }
  }
  await vmm.engine.whenIdle({ timeoutMs: 120_000 });
  return done;
}

const lostSet = (vmm: ReferenceVmm) => vmm.engine.lostPages().map((l) => hex(l.guestPhysAddr)).sort();

async function source(o: SourceOptions): Promise<unknown> {
  const vmm = ReferenceVmm.open({ vcpus: o.vcpus, regions: o.regions, dir2M: o.dir2M, engine: o.engine });
  vmm.onEvents = guestWords('source');
  vmm.start();
  const timeout = o.timeoutMs ?? 120_000;
  await vmm.untilPasses(1, timeout);
  const before = await poison(vmm, o, o.before);
  if (before.length) {
    const want = new Set(before.map((b) => b.gpa));
    await vmm.waitFor('the machine checks of the frames lost before the migration', () => [...want].every((g) => vmm.guestMces().some((m) => hex(m.gpa) === g)), timeout);
  }
  const passesAtMove = vmm.passes();
  const lostAtSource = () => lostSet(vmm);
  const mcesAtSource = () => vmm.guestMces().map((m) => ({ cpu: m.cpu, gpa: hex(m.gpa), bank: m.bank, status: hex(m.status) }));
  let precopy: { gpa: string; hva: string }[] = [];
  let stopped: { gpa: string; hva: string }[] = [];
  // What the source knew with its guest stopped for good (sendMigration closes it after RESUMED).
  let seen = { lost: [] as string[], mces: [] as ReturnType<typeof mcesAtSource> };
  const hooks: MigrateOutOptions = {
    afterRound: async (round) => {
      if (round === 0) precopy = await poison(vmm, o, o.precopy);
    },
    whileStopped: async () => {
      stopped = await poison(vmm, o, o.stopped);
      seen = { lost: lostAtSource(), mces: mcesAtSource() };
    },
  };
  let res;
  if (o.snapshot) {
    res = await saveSnapshot(vmm, o.snapshot, hooks);
    vmm.close();
  } else {
    res = await sendMigration(vmm, o.socket!, hooks);
  }
  const lost = seen.lost;
  const mces = seen.mces;
  return {
    ok: true,
    before,
    precopy,
    stopped,
    lostAtSource: lost,
    mcesAtSource: mces,
    passesAtMove,
    rounds: res.rounds,
    final: res.final,
    firstManifest: res.firstManifest,
    manifest: res.manifest,
    stateBytes: res.stateBytes,
    bytes: res.bytes,
    pausedAtMs: res.pausedAtMs,
    endAtMs: res.endAtMs,
  };
}

async function dest(o: DestOptions): Promise<unknown> {
  const vopts = { dir2M: o.dir2M, engine: o.engine };
  const res = o.snapshot ? await restoreSnapshot(o.snapshot, vopts) : await receiveMigration(o.socket!, vopts, () => out('LISTENING'));
  const vmm = res.vmm;
  // The guest's reports from here on (start() ran before onEvents was set: only the counters saw
  // the first events, and PASS events are periodic).
  vmm.onEvents = guestWords('destination');
  const timeout = o.timeoutMs ?? 120_000;
  const lostHere = lostSet(vmm);
  // Every lost frame as the guarded copy sees it here: listed, never read.
  const guarded: string[] = [];
  for (const r of vmm.regions.values()) for (const off of r.readAvailable(0, r.size).lostOffsets) guarded.push(hex(r.guestPhysAddr + BigInt(off)));
  const p0 = vmm.passes();
  const want = o.passes ?? 2;
  await vmm.waitFor(`${want} more passes on every vCPU after the move`, () => vmm.passes().every((p, i) => p >= p0[i] + want), timeout);
  // The frames lost with the guest stopped: its first touch of each is here. Waited for, not
  // required: the result says what came (the lab case asserts it).
  let expectTimedOut = false;
  if (o.expectMces?.length)
    await vmm
      .waitFor('the machine checks expected here', () => o.expectMces!.every((g) => vmm.guestMces().some((m) => hex(m.gpa) === g)), timeout)
      .catch(() => (expectTimedOut = true));
  const report = await vmm.stop();
  vmm.close();
  return {
    ok: true,
    imports: res.imports,
    frames: res.frames,
    skippedLost: res.skippedLost,
    msrFailed: res.msrFailed.map((m) => hex(BigInt(m))),
    bytes: res.bytes,
    end: res.end,
    runningAtMs: res.runningAtMs,
    downtimeMs: res.runningAtMs - res.end.pausedAtMs,
    lostHere,
    expectTimedOut,
    guardHere: String(vmm.engine.lostPageGuard),
    guarded: guarded.sort(),
    passesAtResume: p0,
    passesAfter: report.vcpus.map((c) => c.passes),
    wrongBytes: report.vcpus.reduce((a, c) => a + c.wrongBytes, 0),
    states: report.vcpus.map((c) => c.state),
    mcesHere: report.guestMces.map((m) => ({ cpu: m.cpu, gpa: hex(frameOf(m.gpa)), bank: m.bank, status: hex(m.status) })),
    injections: report.injections.map((x) => ({ cpu: x.cpu, gpa: hex(x.gpa), path: x.path })),
    errors: [...report.errors.map((e) => `${e.cpu}: ${e.text}`), ...report.vcpus.filter((c) => c.error).map((c) => c.error!)],
    sigbus: report.sigbus,
  };
}

// Exits once the line is written: a VMM whose vCPU threads still run (a failed migration resumes the
// source's guest) would otherwise keep the process alive after RESULT.
function finish(line: string, code: number): void {
  lines.close();
  process.stdin.destroy();
  process.stdout.write(line + '\n', () => process.exit(code));
}

async function main(): Promise<void> {
  const role = process.argv[2];
  const o = JSON.parse(process.argv[3] ?? '{}', (_k, v) => (typeof v === 'string' && /^0x[0-9a-f]+n$/.test(v) ? BigInt(v.slice(0, -1)) : v));
  if (o.regions) for (const r of o.regions) r.guestPhysAddr = BigInt(r.guestPhysAddr);
  const r = role === 'source' ? await source(o as SourceOptions) : role === 'dest' ? await dest(o as DestOptions) : null;
  if (r === null) throw new Error(`role must be source or dest, not ${role}`);
  finish(`RESULT ${toJson(r)}`, 0);
}

main().catch((e) => {
  const text = String(e && e.stack ? e.stack : e);
  process.stderr.write(`migration ${process.argv[2]}: ${text}\n`);
  finish(`RESULT ${JSON.stringify({ ok: false, error: text })}`, 1);
});
