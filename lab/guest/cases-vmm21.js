'use strict';
// Lab cases for issue 21 in the reference VMM's bare-metal guest (real nested KVM, AMD SVM under
// TCG, real MADV_HWPOISON). v1: the engine's lost-page guard is the 'guard' marker, so the guest's
// access to a lost frame comes back from KVM_RUN as EFAULT with no address; the VMM asks next_lost
// and injects an AO. On AMD an AO is a deferred error in a bank with no #MC, and the guest is stuck
// on the access: before, nothing told it (the VMM backed off and gave up: "KVM_RUN keeps failing
// with EFAULT"). Now the VMM raises the guest's poll interrupt (AMD's deferred-error interrupt,
// RAS_GUEST_POLL_VECTOR), taken before the access re-executes; the guest polls its banks, records
// the frame and skips it.
// Registered from cases.js: require('./cases-vmm21').register(def).
const { runVmm, kvmReady, layout } = require('./cases-vmm');
const U = require('./util');

const { hex } = U;
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

function register(def) {
  def({
    id: 'v1',
    name: "reference VMM, 2 vCPUs, root, lostPageGuard 'guard' (EFAULT without an address): on AMD the AO is a deferred error; the guest's poll interrupt finds it and the stuck access moves on",
    kernels: ['6.12'],
    timeout: 300,
    run: (t) => efaultPollCase(t, { vcpus: 2 }),
  });
}

module.exports = { register };
