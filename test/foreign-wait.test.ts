// Issue 20 #4: a thread the engine has no slot for (a VMM's vCPU thread) never waits in the signal
// handler without bound, not even for a paused engine: after HUGETLB_RAS_FOREIGN_WAIT_MS the
// handler returns (KVM_RUN reports EINTR). Run in a child: the old failure is a thread stuck in
// the handler for good.
import { describe, expect, it } from 'vitest';
import { hugeFile, PKG, runChild } from './helpers';

describe('threads without a slot', () => {
  it('a report for a page waiting on a paused engine returns to the thread within the bound; resumed, the page is recovered', () => {
    const r = runChild(`
      const { RasEngine } = ${PKG};
      const native = require('bindings')('hugetlb_ras');
      const e = RasEngine.open({ reserveBytes: 0 });
      const region = e.mapRegion({ name: 'a', path: process.env.F, size: 4 << 20 });
      region.write(0, Buffer.alloc(4 << 20, 9));
      const off = (2 << 20) + 5 * 4096;
      e.pause();
      e.injectPoison(region, off, { mode: 'simulate' });   // the huge page is now pending
      // A vCPU thread the engine does not know gets KVM's report for it (AR, lsb 12), as on KVM_RUN exit.
      native.testRaiseInThread(region.address + BigInt(off), 4, 12);
      native.testJoinRaisers();
      console.log('thread back');
      e.resume();
      e.whenIdle({ timeoutMs: 20000 }).then(() => {
        console.log(JSON.stringify(e.lostPages().map((l) => l.offset)));
        e.close();
      });
    `, { F: hugeFile('foreign-paused') });
    expect(r.stdout, r.stderr.slice(-400)).toContain('thread back');
    expect(r.stdout).toContain(JSON.stringify([(2 << 20) + 5 * 4096]));
    expect(r.status).toBe(0);
  });
});
