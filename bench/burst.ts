// The benchmark's burst row (issue 10 #7): 8 huge pages of 2 MiB poisoned back to back, found by
// vCPU threads, each recovered from the reserve (default depth 8 blocks of 2 MiB). Per page: from
// its first report to usable again, against a memcpy of 2 MiB measured in the same rep.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { RasEngine, type RecoveredEvent } from '../src/index';
import { benchNative } from '../src/native';
import { fillPattern, startVcpuLoad, verifyPattern } from '../src/testing';

const MiB = 1 << 20;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export interface BurstResult {
  pages: number;
  perPageNs: number[];
  /** First report to the whole page in place (the lazy path's back half done; = perPageNs if eager). */
  filledNs: number[];
  limitNs: number[];
  path: string;
  reserveMisses: number;
}

export async function benchBurst(reps: number, dir: string, pages = 8): Promise<BurstResult> {
  const out: BurstResult = { pages, perPageNs: [], filledNs: [], limitNs: [], reserveMisses: 0, path: '' };
  // The default engine: the uffd guard, and the lazy path where a full userfaultfd exists.
  const engine = RasEngine.open({ lostPageGuard: 'uffd' });
  const file = path.join(dir, `bench-burst-${process.pid}`);
  try {
    const region = engine.mapRegion({ name: 'burst', path: file, size: pages * 2 * MiB });
    const got: RecoveredEvent[] = [];
    engine.on('recovered', (e) => got.push(e));
    for (let rep = 0; rep < reps + 1; rep++) {
      fillPattern(region, rep + 7);
      for (let i = 0; i < 20_000; i++) {
        const s = engine.stats();
        if (s.reserveBytes >= s.reserveTarget) break;
        await sleep(1);
      }
      const missedBefore = engine.stats().reserve['2M']?.missed ?? 0;
      got.length = 0;
      // Silent poison in every page, then the vCPUs find them all at once.
      for (let p = 0; p < pages; p++) engine.injectPoison(region, p * 2 * MiB + 4096 * (5 + p), { mode: 'simulate', signal: false });
      const load = startVcpuLoad(engine, { region, threads: 2, seed: rep + 7, writeRatio: 0.25 });
      for (let i = 0; i < 120_000 && got.length < pages; i++) await sleep(1);
      await engine.whenIdle({ timeoutMs: 120_000 });
      const report = await load.stop();
      const check = verifyPattern(region, rep + 7);
      if (got.length !== pages || report.wrongBytes !== 0 || check.wrongBytes !== 0 || check.unreadableOffsets.length !== pages)
        throw new Error(`burst rep ${rep}: recovery incorrect (${got.length} recovered, ${check.wrongBytes} wrong)`);
      const limit = benchNative().memcpyLimit(2 * MiB);
      const missed = (engine.stats().reserve['2M']?.missed ?? 0) - missedBefore;
      await engine.resetRegion(region);
      if (rep === 0) continue; // warm-up
      for (const e of got) out.perPageNs.push(Number(e.totalNs));
      for (const e of got) out.filledNs.push(Number(e.filledNs));
      out.path = [...new Set(got.map((e) => e.path))].join('+');
      out.limitNs.push(limit);
      out.reserveMisses += missed;
    }
  } finally {
    fs.rmSync(file, { force: true });
    engine.close();
  }
  return out;
}
