// Test tool: native vCPU load threads over a region (see native/vcpu.cc), which stall like a vCPU
// while the engine recovers a huge page they touch.
import { RasEngine } from '../engine';
import { checkUint, invalidArg, RasError } from '../errors';
import { native, type NativeVcpuReport } from '../native';
import { checkKeys } from '../options';
import { Region, type RegionUser } from '../region';

export interface VcpuLoadOptions {
  region: Region;
  threads: number;
  /** The seed the region was filled with (fillPattern). */
  seed: number;
  /** Share of accesses that also write (the same pattern value) back; default 0.25. */
  writeRatio?: number;
  /** Restrict the accesses to [offset, offset+length) of the region (default: all of it). */
  window?: { offset: number; length: number };
}

export interface VcpuStall {
  thread: number;
  hostAddress: bigint;
  offset: number;
  guestPhysAddr: bigint;
  /** Signal to the handler releasing the thread. */
  stallNs: bigint;
  /** Signal to the retried access completing (on the lazy path it may wait for its piece); 0n if it never completed. */
  accessNs: bigint;
  /** CLOCK_MONOTONIC when the signal reached the thread (compare with the poison report's). */
  startNs: bigint;
}

export interface VcpuMceReport {
  thread: number;
  hostAddress: bigint;
  offset: number;
  guestPhysAddr: bigint;
}

export interface VcpuLoadReport {
  accesses: number;
  wrongBytes: number;
  firstWrongOffset: number;
  stalls: VcpuStall[];
  mceReports: VcpuMceReport[];
}

export interface VcpuLoad {
  stop(): Promise<VcpuLoadReport>;
}

type VcpuLoadHandle = VcpuLoad & RegionUser;

export function startVcpuLoad(engine: RasEngine, options: VcpuLoadOptions): VcpuLoad {
  if (!(engine instanceof RasEngine)) throw invalidArg('engine must be a RasEngine');
  if (typeof options !== 'object' || options === null) throw invalidArg('options must be an object');
  checkKeys(options, 'startVcpuLoad');
  if (typeof options.window === 'object' && options.window !== null) checkKeys(options.window, 'startVcpuLoad window');
  const region = Region.check(options.region);
  engine.ownRegion(region);
  const threads = checkUint(options.threads, 'threads');
  if (threads < 1 || threads > 64) throw new RasError('ERR_OUT_OF_RANGE', 'threads must be 1..64');
  const seed = checkUint(options.seed, 'seed');
  const writeRatio = options.writeRatio ?? 0.25;
  if (typeof writeRatio !== 'number' || !(writeRatio >= 0 && writeRatio <= 1)) throw invalidArg('writeRatio must be in [0, 1]');
  const win = options.window ?? { offset: 0, length: region.size };
  region.checkRange(win.offset, win.length);
  if (win.length < 4096) throw new RasError('ERR_OUT_OF_RANGE', 'window must cover at least 4096 bytes');
  const handle = native.startVcpuLoad(region.id, threads, seed, writeRatio, win.offset, win.length);
  let raw: NativeVcpuReport | undefined;
  const load: VcpuLoadHandle = {
    region,
    stopNow() {
      if (raw) return;
      raw = native.stopVcpuLoad(handle);
      engine.removeRegionUser(load);
    },
    async stop() {
      load.stopNow();
      const r = raw as NativeVcpuReport;
      const where = (hostAddress: bigint) => {
        const offset = region.offsetOf(hostAddress);
        return { hostAddress, offset, guestPhysAddr: region.guestPhysAddrOf(offset) };
      };
      return {
        accesses: r.accesses,
        wrongBytes: r.wrongBytes,
        firstWrongOffset: r.firstWrongOffset,
        stalls: r.stalls.map((s) => ({ thread: s.thread, stallNs: s.stallNs, accessNs: s.accessNs, startNs: s.startNs, ...where(s.hostAddress) })),
        mceReports: r.mceReports.map((m) => ({ thread: m.thread, ...where(m.hostAddress) })),
      };
    },
  };
  engine.addRegionUser(load);
  return load;
}
