// A VMM's vCPU threads are not the engine's: they sit in KVM_RUN and the VMM installed its own
// SIGBUS handler before the engine (as QEMU does). These tests play that VMM with a native stand-in
// (native/testing/foreign_thread.cc): a thread the engine has no slot for, and calls through the C
// API table exactly as a VMM's native vCPU loop would. Each runs in a child process: it installs
// signal handlers and a wrong answer could kill it.
import * as fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import { hugeFile, runChild } from './helpers';

// What a marker access raises depends on the kernel: with CONFIG_MEMORY_FAILURE x86 sends
// BUS_MCEERR_AR with lsb 12, without it BUS_ADRERR (lsb 0). The VMM gets whatever the kernel sent.
const memoryFailureKernel = fs.existsSync('/proc/sys/vm/memory_failure_recovery');

function vmmScript(guard: string): string {
  return `
    const native = require('bindings')('hugetlb_ras');
    native.testInstallVmmHandler();  // the VMM's own SIGBUS handler, installed before the engine
    const fs = require('fs');
    const { RasEngine } = require('hugetlb-ras');
    const { fillPattern } = require('hugetlb-ras/testing');
    (async () => {
      const e = RasEngine.open({ reserveBytes: 0, lostPageGuard: '${guard}' });
      const ev = { poison: [], recovered: [] };
      e.on('poison', (p) => ev.poison.push(p));
      e.on('recovered', (r) => ev.recovered.push(r));
      const GPA = 0x40000000n, H = 2 << 20;
      const r = e.mapRegion({ name: 'ram', path: process.env.F, size: 4 * H, guestPhysAddr: GPA });
      fillPattern(r, 7);
      const lostOff = H + 0x5000, healthyOff = H + 0x1000, otherOff = H + 0x6000;
      const want = [lostOff, healthyOff, otherOff, 0x10].map((o) => r.read(o, 1)[0]);
      const A = (o) => r.address + BigInt(o);
      // Silent poison: the report comes with the next access, as for a guest's access under KVM.
      e.injectPoison(r, lostOff, { mode: 'simulate', signal: false });
      // KVM reports the address the guest touched first: a healthy subpage of the poisoned page.
      const first = native.testForeignRead([A(healthyOff)]);
      await e.whenIdle({ timeoutMs: 10000 });
      // Then: a late lsb-12 report for a healthy frame of the now split page, and the reads.
      const second = native.testForeignRead([A(lostOff), A(healthyOff), A(otherOff), A(0x10)], A(healthyOff + 0x40));
      await e.whenIdle({ timeoutMs: 10000 });
      const api = e.nativeApi();
      const capi = {
        lost: native.testCapiCheck(api, 'gpa', GPA + BigInt(lostOff) + 7n, 1000),
        healthy: native.testCapiCheck(api, 'hva', A(healthyOff), 1000),
        outside: native.testCapiCheck(api, 'gpa', 0x1000n, 1000),
        next: native.testCapiNextLost(api, 0n),
      };
      const fd = fs.openSync('/proc/self/pagemap', 'r');
      const pm = Buffer.alloc(8);
      fs.readSync(fd, pm, 0, 8, Number(A(lostOff) / 4096n) * 8);
      const entry = pm.readBigUInt64LE(0);
      const st = e.stats();
      const out = { want, first, second, capi, stats: { guard: st.guard, kvmWarning: st.kvmWarning, stale: st.reports.stale, uffd: st.userfaultfd },
        lostPages: e.lostPages().map((l) => l.guestPhysAddr), recovered: ev.recovered,
        pagemap: { present: (entry >> 63n) === 1n, swapped: ((entry >> 62n) & 1n) === 1n },
        lostGpa: GPA + BigInt(lostOff), hugeGpa: GPA + BigInt(H), lostHva: A(lostOff) };
      console.log('RESULT ' + JSON.stringify(out, (k, v) => (typeof v === 'bigint' ? '0x' + v.toString(16) : v)));
      e.close();
    })().catch((err) => { console.error(err); process.exit(3); });
  `;
}

interface Delivery { addr: string; code: number; lsb: number; ucontext: boolean }
interface Status { rc: number; state: number; guard: number; gpa: string; hugePageGpa: string; hugePageSize: number; wholeHugePage: number }

function run(guard: string) {
  const r = runChild(vmmScript(guard), { F: hugeFile(`foreign-${guard}`) });
  const line = r.stdout.split('\n').find((l) => l.startsWith('RESULT '));
  expect(line, `child: status ${r.status} signal ${r.signal}\n${r.stderr}`).toBeDefined();
  return JSON.parse(line!.slice(7));
}

describe('a VMM with its own SIGBUS handler and vCPU threads the engine does not know', () => {
  it('uffd guard: the VMM gets exactly the SIGBUS for the lost frame, with the kernel siginfo and a ucontext; stale reports retry', () => {
    const o = run('uffd');
    // The first touch (a healthy subpage) stalled only this thread until the split, then read.
    expect(o.first.deliveries).toEqual([]);
    expect(o.first.values).toEqual([o.want[1]]);
    // One SIGBUS reached the VMM: the lost frame, nothing for the healthy ones or the late report.
    const d: Delivery[] = o.second.deliveries;
    expect(d).toHaveLength(1);
    expect(d[0].addr).toBe(o.lostHva);
    expect(d[0].ucontext).toBe(true);
    expect([d[0].code, d[0].lsb]).toEqual(memoryFailureKernel ? [4, 12] : [2, 0]);
    expect(o.second.values).toEqual([-1, o.want[1], o.want[2], o.want[3]]);
    // The late lsb-12 report for a healthy frame was stale: no loss, no event, counted.
    expect(o.stats.stale).toBeGreaterThanOrEqual(1);
    expect(o.lostPages).toEqual([o.lostGpa]);
    expect(o.recovered).toHaveLength(1);
    expect(o.recovered[0].lostGuestPhysAddrs).toEqual([o.lostGpa]);
    expect(o.recovered[0].guard).toBe('uffd');
    expect(o.recovered[0].kvmWarning).toBeUndefined();
    expect(o.stats.guard).toBe('uffd');
    expect(o.stats.kvmWarning).toBeUndefined();
    // The marker: not present, a swap-type entry (as a hwpoison entry), and no page behind it.
    expect(o.pagemap).toEqual({ present: false, swapped: true });
    // The C API, called as a vCPU loop would after an EFAULT or an MMIO exit.
    const lost: Status = o.capi.lost;
    expect(lost).toMatchObject({ rc: 0, state: 3, guard: 1, wholeHugePage: 0, gpa: o.lostGpa, hugePageGpa: o.hugeGpa, hugePageSize: 2 << 20 });
    expect(o.capi.healthy).toMatchObject({ rc: 0, state: 1 });
    expect(o.capi.outside).toMatchObject({ rc: 0, state: 0 });
    expect(o.capi.next.version).toBe(2);
    expect(o.capi.next.lost).toEqual([expect.objectContaining({ gpa: o.lostGpa, hva: o.lostHva, size: 4096, code: 4 })]);
  });

  it('guard (PROT_NONE / guard markers): the VMM still gets a machine-check SIGBUS with a ucontext, and is told KVM will not', () => {
    const o = run('guard');
    expect(o.first.deliveries).toEqual([]);
    const d: Delivery[] = o.second.deliveries;
    expect(d).toHaveLength(1);
    expect(d[0]).toMatchObject({ addr: o.lostHva, code: 4, lsb: 12, ucontext: true });
    expect(o.second.values).toEqual([-1, o.want[1], o.want[2], o.want[3]]);
    expect(o.lostPages).toEqual([o.lostGpa]);
    expect(o.recovered[0].guard).toBe('guard');
    expect(o.recovered[0].kvmWarning).toMatch(/EFAULT/);
    expect(o.stats.kvmWarning).toMatch(/check_gpa/);
    expect(o.capi.lost).toMatchObject({ state: 3, guard: 3, gpa: o.lostGpa });
  });
});

it('the C API header is shipped with the package and matches the table the addon exports', () => {
  const pkgJson = JSON.parse(fs.readFileSync(`${__dirname}/../package.json`, 'utf8')) as { files: string[] };
  expect(pkgJson.files).toContain('include');
  const h = fs.readFileSync(`${__dirname}/../include/hugetlb_ras.h`, 'utf8');
  expect(h).toMatch(/#define HUGETLB_RAS_API_VERSION 2/);
});
