// Issue 20 #2: the C API keeps its header's contract. check_* waits at most timeout_ms (its own
// probe's wait for a page under recovery included), and a non-zero return never leaves a state
// that reads as NOT_RAM.
import { describe, expect, it } from 'vitest';
import { hugeFile, MiB, openEngine, PKG, runChild, SUB } from './helpers';

// eslint-disable-next-line @typescript-eslint/no-require-imports
const native = require('bindings')('hugetlb_ras');
const NOT_RAM = 0, HEALTHY = 1, RECOVERING = 2, UNKNOWN = 4;

describe('C API contract', () => {
  it('check_gpa with timeout 0 on a fresh poison answers RECOVERING instead of waiting for the recovery', async () => {
    const engine = openEngine();
    const region = engine.mapRegion({ name: 'ram', path: hugeFile('capi-t0'), size: 8 * MiB, guestPhysAddr: 0x100000000n });
    region.write(0, Buffer.alloc(8 * MiB, 7));
    const api = engine.nativeApi();
    engine.pause();
    // A lane backlog ahead of the probe's report, so the page is still being handled when it asks.
    native.testRaise(region.address + BigInt(SUB), 5, 12, 2000);
    engine.injectPoison(region, 4 * MiB + 3 * SUB, { mode: 'simulate', signal: false });
    engine.resume();
    const st = native.testCapiCheck(api, 'gpa', 0x100000000n + BigInt(4 * MiB + 3 * SUB), 0);
    expect(st.rc).toBe(0);
    expect(st.state).toBe(RECOVERING);
    expect(st.gpa).toBe(0x100000000n + BigInt(4 * MiB + 3 * SUB));
    await engine.whenIdle({ timeoutMs: 20_000 });
    // Once recovered, the same call says it is lost; a neighbour reads healthy.
    expect(native.testCapiCheck(api, 'gpa', 0x100000000n + BigInt(4 * MiB + 3 * SUB), 0).state).toBe(3);
    expect(native.testCapiCheck(api, 'gpa', 0x100000000n + BigInt(4 * MiB + 4 * SUB), 0).state).toBe(HEALTHY);
  });

  it('a probe fault that is not a memory error returns -EFAULT with state UNKNOWN, never NOT_RAM', () => {
    const r = runChild(`
      const fs = require('fs');
      const { RasEngine } = ${PKG};
      const native = require('bindings')('hugetlb_ras');
      const e = RasEngine.open({ reserveBytes: 0 });
      const region = e.mapRegion({ name: 'a', path: process.env.F, size: 4 << 20, guestPhysAddr: 0x200000000n });
      region.write(0, Buffer.alloc(4 << 20, 1));
      fs.truncateSync(process.env.F, 0);
      const st = native.testCapiCheck(e.nativeApi(), 'gpa', 0x200000000n + 8192n, 1000);
      console.log(JSON.stringify({ rc: st.rc, state: st.state, gpa: String(st.gpa), regionId: st.regionId }));
      e.close();
    `, { F: hugeFile('capi-efault') });
    const out = JSON.parse(r.stdout.trim().split('\n').pop()!);
    expect(out.rc).toBe(-14);  // -EFAULT
    expect(out.state).toBe(UNKNOWN);
    expect(out.state).not.toBe(NOT_RAM);
    expect(out.gpa).toBe(String(0x200000000n + 8192n));
    expect(out.regionId).toBeGreaterThan(0);
  });
});
