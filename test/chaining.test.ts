// A signal that is not ours goes to the disposition installed before the engine, exactly as the
// kernel would have applied it (issue 10 #11). The previous dispositions are installed by a native
// test tool (native/testing/prev_handler.cc) before RasEngine.open. Each case runs in a child: the
// wrong answer is a crash or a fault loop.
import { describe, expect, it } from 'vitest';
import { hugeFile, PKG, runChild, TESTING } from './helpers';

const addon = "require('bindings')('hugetlb_ras')";

// A real bus error the engine does not own: the backing file truncated under a reading thread.
const realBusError = `
  const fs = require('fs');
  const { RasEngine } = ${PKG};
  const { startVcpuLoad, fillPattern } = ${TESTING};
  const e = RasEngine.open({ reserveBytes: 0 });
  const region = e.mapRegion({ name: 'a', path: process.env.F, size: 4 << 20 });
  fillPattern(region, 1);
  fs.truncateSync(process.env.F, 0);
  startVcpuLoad(e, { region, threads: 1, seed: 1 });
  setTimeout(() => console.log('survived'), 3000);
`;

describe('chaining to the previous SIGBUS disposition', () => {
  it('SIG_IGN stored with SA_SIGINFO: a sent SIGBUS is ignored, a fault kills with SIGBUS (never a call to address 1)', () => {
    const sent = runChild(`
      ${addon}.testInstallPrevSigbus('ign-siginfo');
      const { RasEngine } = ${PKG};
      RasEngine.open({ reserveBytes: 0 });
      process.kill(process.pid, 'SIGBUS');
      setTimeout(() => console.log('survived'), 200);
    `);
    expect(sent.stdout, sent.stderr).toContain('survived');
    const fault = runChild(`${addon}.testInstallPrevSigbus('ign-siginfo');\n${realBusError}`, { F: hugeFile('ign-siginfo') });
    expect(fault.signal).toBe('SIGBUS');
  });

  it('plain SIG_IGN: a fault kills with SIGBUS instead of faulting forever', () => {
    const fault = runChild(`${addon}.testInstallPrevSigbus('ign');\n${realBusError}`, { F: hugeFile('ign') });
    expect(fault.signal).toBe('SIGBUS');
    expect(fault.stdout).not.toContain('survived');
  });

  it('SA_RESETHAND: the previous handler runs once, the next SIGBUS takes the default action', () => {
    const r = runChild(`
      const native = ${addon};
      native.testInstallPrevSigbus('resethand');
      const { RasEngine } = ${PKG};
      RasEngine.open({ reserveBytes: 0 });
      process.kill(process.pid, 'SIGBUS');
      setTimeout(() => {
        console.log('calls ' + native.testPrevSigbusCalls().calls);
        process.kill(process.pid, 'SIGBUS');
        setTimeout(() => console.log('survived'), 200);
      }, 100);
    `);
    expect(r.stdout).toContain('calls 1');
    expect(r.stdout).not.toContain('survived');
    expect(r.signal).toBe('SIGBUS');
  });

  it("the previous handler runs with its own sa_mask blocked", () => {
    const r = runChild(`
      const native = ${addon};
      native.testInstallPrevSigbus('mask');
      const { RasEngine } = ${PKG};
      RasEngine.open({ reserveBytes: 0 });
      process.kill(process.pid, 'SIGBUS');
      setTimeout(() => console.log(JSON.stringify(native.testPrevSigbusCalls())), 100);
    `);
    expect(JSON.parse(r.stdout.trim().split('\n').pop()!)).toEqual({ calls: 1, usr1Blocked: 1 });
  });
});
