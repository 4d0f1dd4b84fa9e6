// The destination side: a new VMM process reads the stream (a socket or a snapshot file), maps
// fresh hugetlbfs files (ReferenceVmm.open with restore), imports each manifest (importLost: the
// lost frames get their guard before the guest runs), writes RAM with writeAvailable (a lost frame
// is skipped, never written with the source's zeros), restores the vCPUs and the VM, and runs.
import type { Readable } from 'node:stream';
import type { RasEngine, Region } from '../../../src/index';
import { ReferenceVmm } from '../vmm';
import type { ReferenceVmmOptions, VmmRegionSpec } from '../vmm-types';
import { REC, StreamError, StreamReader, parseRam, parseState } from './stream';
import { receiveFrames } from './ram';
import { importLost, lostFrames, type ImportResult, type LostManifest } from './lost';
import { wallMs } from './source';

/** What migrateIn needs of the VMM it opens: the reference VMM (bare metal) and its Linux mode. */
export interface RestorableVm {
  readonly engine: RasEngine;
  readonly regions: Map<string, Region>;
  readonly machine: { restoreState(s: { vcpus: Buffer[]; vm: Buffer }): { msrFailed: number[] } };
  start(): void;
  close(): void;
}

export type StreamKind = 'bare-metal' | 'linux';
/** Opens the destination's VMM for the stream's CONFIG: fresh regions, nothing booted. */
export type OpenRestored<V extends RestorableVm> = (c: { kind: StreamKind; vcpus: number; regions: VmmRegionSpec[] }) => V;

export interface MigrateInResult<V extends RestorableVm = ReferenceVmm> {
  vmm: V;
  imports: (ImportResult & { frames: number })[];
  manifest: LostManifest | null;
  frames: number;
  /** RAM frames of the stream that were lost here already (skipped by writeAvailable). */
  skippedLost: number;
  msrFailed: number[];
  bytes: number;
  end: { rounds: number; pausedAtMs: number; endAtMs: number; lostFrames: number };
  /** Wall clock when the vCPUs were started here; stop-to-running = runningAtMs - end.pausedAtMs. */
  runningAtMs: number;
}

type Config = { kind?: StreamKind; vcpus: number; regions: { name: string; pageSize: '2M' | '1G'; size: number; guestPhysAddr: string }[] };

export async function migrateIn<V extends RestorableVm = ReferenceVmm>(
  input: Readable,
  opts: Omit<ReferenceVmmOptions, 'regions' | 'vcpus' | 'restore'> = {},
  open?: OpenRestored<V>,
): Promise<MigrateInResult<V>> {
  const rd = new StreamReader(input);
  await rd.header();
  const c0 = await rd.next();
  if (!c0 || c0.type !== REC.CONFIG) throw new StreamError('the first record is not CONFIG');
  const cfg = JSON.parse(c0.payload.toString('utf8')) as Config;
  const regions: VmmRegionSpec[] = cfg.regions.map((r) => ({ name: r.name, pageSize: r.pageSize, size: r.size, guestPhysAddr: BigInt(r.guestPhysAddr) }));
  const kind = cfg.kind ?? 'bare-metal';
  let vmm: V;
  if (open) vmm = open({ kind, vcpus: cfg.vcpus, regions });
  else if (kind === 'bare-metal') vmm = ReferenceVmm.open({ ...opts, vcpus: cfg.vcpus, regions, restore: true }) as unknown as V;
  else throw new StreamError(`a ${kind} VM's stream: this destination opens bare-metal VMs`);
  try {
    const res: Omit<MigrateInResult<V>, 'vmm' | 'runningAtMs'> = { imports: [], manifest: null, frames: 0, skippedLost: 0, msrFailed: [], bytes: 0, end: null as never };
    let state = false;
    for (;;) {
      const r = await rd.next();
      if (!r) throw new StreamError('ended before END (the source stopped mid-way)');
      if (r.type === REC.MANIFEST) {
        const m = JSON.parse(r.payload.toString('utf8')) as LostManifest;
        res.imports.push({ ...importLost(vmm.engine, m), frames: lostFrames(m) });
        res.manifest = m;
      } else if (r.type === REC.RAM) {
        const { gpa, data } = parseRam(r.payload);
        res.frames += data.length / 4096;
        res.skippedLost += receiveFrames(vmm.regions.values(), gpa, data).length;
      } else if (r.type === REC.STATE) {
        res.msrFailed = vmm.machine.restoreState(parseState(r.payload)).msrFailed;
        state = true;
      } else if (r.type === REC.END) {
        res.end = JSON.parse(r.payload.toString('utf8')) as MigrateInResult<V>['end'];
        break;
      } else {
        throw new StreamError(`unexpected record ${r.type}`);
      }
    }
    if (!state) throw new StreamError('no vCPU state before END');
    res.bytes = rd.bytes;
    vmm.start();
    return { ...res, vmm, runningAtMs: wallMs() };
  } catch (e) {
    vmm.close();
    throw e;
  }
}
