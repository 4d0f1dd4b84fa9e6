// The reference VMM's SIGBUS handler (vmm/native/sigbus.cc) when the VMM itself, not a vCPU in
// KVM_RUN, touches a lost frame of guest RAM (issue 21 item 4): the instruction would re-execute
// and fault again on return, so the process must die at once, as QEMU does, never spin. Simulated
// poison (no /dev/kvm needed): the engine guards the lost 4 KiB and chains the SIGBUS to the VMM.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { DIR_2M } from './helpers';

const ROOT = path.resolve(__dirname, '..');

function child(body: string) {
  const file = path.join(DIR_2M, `vmm-sigbus-${process.pid}-${Math.random().toString(16).slice(2)}`);
  const script = `
    const vmm = require(${JSON.stringify(path.join(ROOT, 'build/Release/ras_vmm.node'))});
    const { RasEngine } = require(${JSON.stringify(ROOT)});
    if (!vmm.installSigbusHandler().installed) throw new Error('no handler');
    const engine = RasEngine.open({ reserveBytes: 0 });
    const r = engine.mapRegion({ name: 'ram', path: ${JSON.stringify(file)}, size: 2 * 1024 * 1024, guestPhysAddr: 0x100000000n });
    r.write(0, Buffer.alloc(2 * 1024 * 1024, 0x5a));
    ${body}
  `;
  try {
    // The old handler returned and the read re-executed for ever: the timeout is the verdict.
    return spawnSync(process.execPath, ['-e', script], { cwd: ROOT, encoding: 'utf8', timeout: 20_000, killSignal: 'SIGKILL' });
  } finally {
    fs.rmSync(file, { force: true });
  }
}

describe('reference VMM: its own access to a lost frame (issue 21 item 4)', () => {
  it('a guard-less read by a VMM thread dies cleanly with QEMU\'s message, never spins', () => {
    const r = child(`
      // fs.writeSync: the process may end by _exit(), with no asynchronous pipe write flushed.
      const say = (s) => require('fs').writeSync(1, s + '\\n');
      engine.on('recovered', () => setTimeout(() => {
        say('LOST ' + engine.lostPages().length);
        say('HEALTHY ' + vmm.testing.rawRead(r.address + 0x1000n));
        vmm.testing.rawRead(r.address + 0x3000n);
        say('SURVIVED');
      }, 200));
      setTimeout(() => say('NO RECOVERY'), 15000); // keeps the loop alive for the engine's event
      engine.injectPoison(r, 0x3000, { mode: 'simulate' });
    `);
    expect(r.signal, r.stderr).toBe(null); // not killed by the timeout: it did not spin
    expect(r.stdout, JSON.stringify([r.status, r.stderr])).toContain('LOST 1');
    expect(r.stdout).toContain('HEALTHY 90');
    expect(r.stdout).not.toContain('SURVIVED');
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/ras_vmm: hardware memory error at 0x[0-9a-f]{16} touched by a VMM thread that is not a vCPU/);
  });

  it('an engine opened before the VMM\'s handler: the handler refuses to replace it (anotherHandlerFirst), the engine keeps SIGBUS', () => {
    const script = `
      const vmm = require(${JSON.stringify(path.join(ROOT, 'build/Release/ras_vmm.node'))});
      const { RasEngine } = require(${JSON.stringify(ROOT)});
      const engine = RasEngine.open({ reserveBytes: 0 });
      const h = vmm.installSigbusHandler();
      const c = vmm.sigbusCounters();
      console.log(JSON.stringify({ h, current: c.current, installed: c.installed }));
      engine.close();
    `;
    const r = spawnSync(process.execPath, ['-e', script], { cwd: ROOT, encoding: 'utf8', timeout: 20_000 });
    expect(r.status, r.stderr).toBe(0);
    const o = JSON.parse(r.stdout.trim().split('\n').pop()!);
    expect(o.h).toEqual({ installed: false, anotherHandlerFirst: true });
    expect(o.current).toBe(false); // the engine's handler is still the one installed
  });

  it('two VMs in one process: each vCPU thread claims its own SIGBUS slot; a record reaches only its thread', () => {
    const r = spawnSync(process.execPath, ['-e', `
      const vmm = require(${JSON.stringify(path.join(ROOT, 'build/Release/ras_vmm.node'))});
      if (!vmm.installSigbusHandler().installed) throw new Error('no handler');
      console.log(JSON.stringify(vmm.testing.sigbusSlots()));
    `], { cwd: ROOT, encoding: 'utf8', timeout: 20_000 });
    expect(r.status, r.stderr).toBe(0);
    const o = JSON.parse(r.stdout.trim());
    expect(o.slots[0]).toBeGreaterThanOrEqual(0);
    expect(o.slots[1]).toBeGreaterThanOrEqual(0);
    expect(o.slots[0]).not.toBe(o.slots[1]);
    expect([o.takenA, o.takenB]).toEqual([true, false]);
  });

  it("the VMM's own accesses use the engine's guarded copy (C API v2) where the table has it, and fall back to a raw access on v1", () => {
    const t = require(path.join(ROOT, 'build/Release/ras_vmm.node')).testing; // eslint-disable-line @typescript-eslint/no-require-imports
    expect(t.guestCopy({ version: 1, lost: false })).toEqual({ rc: -38, byte: -1, writeRc: -38 }); // -ENOSYS: raw access
    expect(t.guestCopy({ version: 2, lost: false })).toEqual({ rc: 0, byte: 0x5a, writeRc: 0 });
    expect(t.guestCopy({ version: 2, lost: true })).toEqual({ rc: 1, byte: 0, writeRc: 1 }); // a bit, never a fault
  });
});
