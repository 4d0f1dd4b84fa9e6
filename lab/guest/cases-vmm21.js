'use strict';
// Lab cases for issue 21 in the reference VMM's bare-metal guest (real nested KVM, AMD SVM under
// TCG, real MADV_HWPOISON). v1: the engine's lost-page guard is the 'guard' marker, so the guest's
// access to a lost frame comes back from KVM_RUN as EFAULT with no address; the VMM asks next_lost
// and injects an AO. On AMD an AO is a deferred error in a bank with no #MC, and the guest is stuck
// on the access: before, nothing told it (the VMM backed off and gave up: "KVM_RUN keeps failing
// with EFAULT"). Now the VMM raises the guest's poll interrupt (AMD's deferred-error interrupt,
// RAS_GUEST_POLL_VECTOR), taken before the access re-executes; the guest polls its banks, records
// the frame and skips it.
// v2 (item 3): the VMM takes a lost frame out of KVM's memory slots (unmapLost), as a VMM does that
// will not let KVM map a poisoned page again: every later guest access to it is an MMIO exit. The
// guest's vCPU 0 then probes the frame: a load, a store, a read-modify-write. The load and the RMW
// must take their machine check on their own RIP (EIPV, RIPV), with nothing retired (the load's
// destination still holds its sentinel); the store, which KVM retires before the exit, is dropped
// and told by an AO (AMD: a deferred error, found by the guest's poll just after the store).
// Registered from cases.js: require('./cases-vmm21').register(def).
const { runVmm, kvmReady, layout } = require('./cases-vmm');
const U = require('./util');

const { MiB, hex } = U;
const DEFERRED = 1n << 44n, UC = 1n << 61n, POISON = 1n << 43n, VAL = 1n << 63n, MCIP = 4n;

async function efaultPollCase(t, { vcpus }) {
  kvmReady(t);
  const { regions, targets } = layout(false);
  const opts = { vcpus, regions, targets, mode: 'madvise', engine: { reserveBytes: 0, lostPageGuard: 'guard' }, dir2M: '/mnt/huge2m', timeoutMs: 120000 };
  const t0 = Date.now();
  const { result: res, code, signal } = await runVmm(t, opts);
  t.note('wall clock (ms)', Date.now() - t0);
  t.must('the VMM process survived and reported', res && code === 0 && !signal, { code, signal, failures: res && res.failures });
  t.note('vmm', { guard: res.guard, efault: res.efault, mmioInRam: res.mmioInRam, eintrSigbus: res.eintrSigbus, states: res.states, errors: res.errors, injections: res.report.injections, outcomes: res.report.mceOutcomes });
  t.note('guest machine-check reports', res.report.guestMces.map((m) => ({ cpu: m.cpu, gpa: hex(m.gpa), status: hex(m.status), mcgStatus: hex(m.mcgStatus), bank: m.bank, rip: hex(m.rip), skipped: m.skipped })));
  t.eq("engine guard: 'guard'", res.guard, 'guard');
  t.check('the accesses came back as EFAULT from KVM_RUN (no address)', res.efault >= res.targets.length, { efault: res.efault });
  const want = res.targets.map((tg) => hex(BigInt(tg.guestPhysAddr) & ~0xfffn)).sort();
  t.eq('one AO per lost frame, from next_lost', res.report.injections.map((x) => [x.gpa, x.path, x.ar]).sort(), want.map((g) => [g, 'next-lost', false]));
  t.check('each AO: AMD deferred bits (VAL DEFERRED POISON, no UC)',
    res.report.injections.every((x) => (BigInt(x.status) & (VAL | DEFERRED | POISON | UC)) === (VAL | DEFERRED | POISON)), res.report.injections);
  const polled = res.report.guestMces.filter((m) => (BigInt(m.status) & DEFERRED) && !(BigInt(m.mcgStatus) & MCIP));
  t.eq("the guest's poll found each lost frame, once (a deferred error, outside any #MC)", polled.map((m) => hex(m.gpa)).sort(), want);
  t.check('the poll interrupted the verifier on the frame and skipped it', polled.every((m) => m.skipped), polled);
  t.eq('no other machine check in the guest', res.unexpectedMces, []);
  t.eq('no VMM error (before: "KVM_RUN keeps failing with EFAULT and the engine names no lost frame")', res.errors, []);
  t.eq("the guest's verification found no wrong byte", res.wrongBytes, 0);
  t.eq('every vCPU stopped cleanly (BYE)', res.states, Array(vcpus).fill('bye'));
  t.check('every vCPU resumed verifying after the poison', res.passesAfter.every((p, i) => p > res.passesBefore[i]), { before: res.passesBefore, after: res.passesAfter });
  t.eq('VMM verdict: no failures', res.failures, []);
}

const SITE = { verifier: 1, load: 2, rmw: 3, store: 4, raxIntact: 0x10 };

async function mmioProbeCase(t) {
  kvmReady(t);
  const { regions } = layout(false);
  const target = { region: 'ram2m', offset: 4 * MiB + 0x7000 }; // a data slot (the first region is never split)
  const opts = { vcpus: 1, regions, targets: [target], probe: target, unmapLost: true, mode: 'madvise', engine: { reserveBytes: 0 }, dir2M: '/mnt/huge2m', timeoutMs: 120000 };
  const { result: res, code, signal } = await runVmm(t, opts);
  t.must('the VMM process survived and reported', res && code === 0 && !signal, { code, signal, failures: res && res.failures });
  const x = hex(BigInt(res.targets[0].guestPhysAddr) & ~0xfffn);
  const mces = res.report.guestMces.map((m) => ({ cpu: m.cpu, gpa: hex(m.gpa), status: hex(m.status), mcgStatus: hex(m.mcgStatus), bank: m.bank, rip: hex(m.rip), site: m.site }));
  t.note('guest machine-check reports', mces);
  t.note('vmm', { guard: res.guard, efault: res.efault, mmioInRam: res.mmioInRam, eintrSigbus: res.eintrSigbus, states: res.states, errors: res.errors, injections: res.report.injections.map((j) => [j.gpa, j.path, j.ar ? 'AR' : 'AO', j.mcgStatus]), outcomes: res.report.mceOutcomes, vcpus: res.report.vcpus });
  const at = (site) => res.report.guestMces.filter((m) => hex(m.gpa) === x && (m.site & 0xf) === site);
  t.eq('the first access (the verifier) reached the VMM as SIGBUS: one AR', res.report.injections.filter((j) => j.path === 'sigbus').map((j) => [j.gpa, j.ar]), [[x, true]]);
  t.check('the later accesses were MMIO exits inside guest RAM (the frame is out of the slots)', res.mmioInRam >= 3, { mmioInRam: res.mmioInRam });
  const load = at(SITE.load), rmw = at(SITE.rmw), store = at(SITE.store);
  t.eq("the load: one #MC, on the load's own RIP", load.length, 1);
  t.check('the load: nothing retired (rax still the sentinel at the #MC)', load.length === 1 && (load[0].site & SITE.raxIntact) !== 0, load);
  t.check('the load: MCG_STATUS EIPV|RIPV, AMD AR bits (UC POISON)', load.length === 1 && (BigInt(load[0].mcgStatus) & 3n) === 3n && (BigInt(load[0].status) & ((1n << 61n) | (1n << 43n))) === ((1n << 61n) | (1n << 43n)), load);
  t.eq("the read-modify-write: one #MC, on its own RIP (its write half dropped, RIP put back)", rmw.length, 1);
  t.check('the RMW: MCG_STATUS EIPV|RIPV', rmw.length === 1 && (BigInt(rmw[0].mcgStatus) & 3n) === 3n, rmw);
  t.eq('the store: retired by KVM, so no AR; an AO the guest polled just after it', store.map((m) => (BigInt(m.status) >> 44n) & 1n), [1n]);
  t.eq('machine checks injected from MMIO exits: AR (load), AO (store), AR (RMW)', res.report.injections.filter((j) => j.path === 'mmio').map((j) => [j.gpa, j.ar]), [[x, true], [x, false], [x, true]]);
  t.eq('no report at any other RIP for the frame', res.report.guestMces.filter((m) => hex(m.gpa) === x && ![SITE.verifier, SITE.load, SITE.rmw, SITE.store].includes(m.site & 0xf)).length, 0);
  t.eq('no VMM error', res.errors, []);
  t.eq("the guest's verification found no wrong byte", res.wrongBytes, 0);
  t.eq('the vCPU stopped cleanly (BYE)', res.states, ['bye']);
  t.eq('VMM verdict, the per-frame count aside (the probe adds three): no failures', res.failures.filter((f) => !/machine checks, expected 1/.test(f)), []);
}

function register(def) {
  def({
    id: 'v2',
    name: 'reference VMM, 1 vCPU, root, unmapLost: the lost frame out of the KVM slots; a load, a store and a read-modify-write on it come as MMIO exits: #MC on the exact RIP, nothing retired',
    kernels: ['6.12'],
    timeout: 300,
    run: (t) => mmioProbeCase(t),
  });
  def({
    id: 'v1',
    name: "reference VMM, 2 vCPUs, root, lostPageGuard 'guard' (EFAULT without an address): on AMD the AO is a deferred error; the guest's poll interrupt finds it and the stuck access moves on",
    kernels: ['6.12'],
    timeout: 300,
    run: (t) => efaultPollCase(t, { vcpus: 2 }),
  });
}

module.exports = { register };
