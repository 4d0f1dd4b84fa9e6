'use strict';
// Lab cases for issue 19's last windows, on a real kernel.
//   i1 (6.12, 6.1): a REAL poison captured after close()'s drain settled and before the region's unmap
//              (the native test switch poisons with MADV_HWPOISON at exactly that moment): the journal
//              has the frame when close() returns, and the next engine knows it (6.1: the huge page
//              is refused, lost whole). i1b: the same with unmapRegion() (the engine lives on).
//   i2 (6.12): the eager swap of a kernel without guard markers where no poison marker is used
//              (lostPageGuard 'guard'): held between the mremap and the guards (native test switch),
//              a kernel-mode read of the healthy subpages (what KVM's access for a vCPU is) succeeds
//              with the guest's bytes; afterwards only the lost subpage fails (EFAULT), real poison.
//              Not on 6.1: the engine refuses every recovery there (no read-around of a poisoned huge
//              page before 6.5, simulated poison included: lab run of 2026-12-07), so no swap runs.
// Registered from cases.js: require('./cases-integrity').register(def).
const fs = require('fs');
const os = require('os');
const path = require('path');
const U = require('./util');

const { MiB, SUB } = U;
const HP = 2 * MiB;
const PAGES = 3;
const SEED = 0x19a7;
const EFAULT = 14;

function native() {
  const root = process.env.LAB_PKG || path.resolve(__dirname, '..', '..');
  return require(path.join(root, 'dist', 'src', 'native.js')).native;
}

function journalPath(t, tag) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `lab-${tag}-`));
  t.onCleanup(() => fs.rmSync(dir, { recursive: true, force: true }));
  return path.join(dir, 'journal');
}

const covers = (frames, off) => frames.some((f) => f.offset <= off && off < f.offset + f.size);

function unmapWindow(id, how) {
  return {
    id,
    name: `a real poison captured after the drain of ${how}() and before the unmap: journaled before ${how}() returns, known to the next engine`,
    kernels: ['6.12', '6.1'],
    async run(t) {
      const gpa0 = how === 'close' ? 0x19_0000_0000n : 0x1a_0000_0000n;
      const off = HP + 27 * SUB;
      const journal = journalPath(t, id);
      const file = t.hugePath(HP, id);
      const { engine } = t.openEngine({ journalPath: journal });
      const region = t.mapRegion(engine, { name: id, path: file, size: PAGES * HP, guestPhysAddr: gpa0 });
      U.testing().fillPattern(region, SEED);
      native().testPoisonAtUnmap(region.id, off, true);
      if (how === 'close') engine.close();
      else engine.unmapRegion(region);
      const replay = U.pkg().readJournal(journal);
      t.note(`${id}: journal after ${how}()`, { lost: U.plain(replay.lost), split: U.plain(replay.split) });
      t.check(`${id}: the journal holds the frame poisoned in the window when ${how}() returned`, covers(replay.lost, off), { lost: U.plain(replay.lost) });
      t.check(`${id}: the file's page is really poisoned there (pread EIO)`, U.pread(file, off, SUB).errno === 'EIO', { pread: U.pread(file, off, SUB).errno });
      if (how !== 'close') engine.close();
      const next = t.openEngine({ journalPath: journal }).engine;
      const again = t.mapRegion(next, { name: id, path: file, size: PAGES * HP, guestPhysAddr: gpa0 });
      await t.idle(next);
      const lost = t.lostOf(next, again);
      t.note(`${id}: next engine: lostPages`, U.plain(lost));
      t.check(`${id}: next engine: lostPages covers the frame`, covers(lost, off), { lost: U.plain(lost) });
      let threw;
      try {
        again.read(off, 1);
      } catch (e) {
        threw = e && e.code;
      }
      t.eq(`${id}: next engine: the frame is never read`, threw, 'ERR_POISONED');
      t.eq(`${id}: next engine: huge page 0 is the guest's`, U.testing().verifyPattern(again, SEED).unreadableOffsets.filter((o) => o < HP), []);
    },
  };
}

function swapWindow() {
  return {
    id: 'i2',
    name: 'eager swap without guard or poison markers (real poison): healthy memory stays readable to the kernel (as KVM) during the swap',
    kernels: ['6.12'],
    async run(t) {
      const n = native();
      const off = HP + 13 * SUB;
      const probes = [HP, off - SUB, off + SUB, 2 * HP - SUB];
      const { engine } = t.openEngine({ lostPageGuard: 'guard', lazyRecovery: false, reserveBytes: 0 });
      t.eq('lostPageGuard', engine.lostPageGuard, 'guard');
      const region = t.mapRegion(engine, { name: 'i2', path: t.hugePath(HP, 'i2'), size: PAGES * HP, guestPhysAddr: 0x1b_0000_0000n });
      U.testing().fillPattern(region, SEED);
      const want = probes.map((o) => region.read(o, SUB));
      n.testHoldInSwap(1);
      let during = [];
      try {
        await t.inject(engine, region, off);
        const held = await t.waitFor(() => n.testHoldInSwap(-1) === 2, 60000);
        t.must('the swap reached the window (block in place, lost subpage not guarded yet)', held, { state: n.testHoldInSwap(-1) });
        during = probes.map((o) => n.testKernelRead(region.address + BigInt(o), SUB));
      } finally {
        n.testHoldInSwap(0);
      }
      await t.idle(engine);
      t.eq(
        'during the swap: kernel-mode reads of healthy subpages',
        during.map((d) => (typeof d === 'number' ? `errno ${d}` : 'read')),
        probes.map(() => 'read'),
      );
      t.check('during the swap: they read the guest bytes', during.every((d, i) => Buffer.isBuffer(d) && d.equals(want[i])));
      t.eq('lostPages', t.lostOf(engine, region).map((l) => [l.offset, l.size]), [[off, SUB]]);
      t.eq('after the swap: a kernel-mode read of the lost subpage fails (EFAULT)', n.testKernelRead(region.address + BigInt(off), SUB), EFAULT);
      const v = U.testing().verifyPattern(region, SEED);
      t.eq('after the swap: every healthy byte right, only the lost subpage unreadable', { wrong: v.wrongBytes, unreadable: v.unreadableOffsets }, { wrong: 0, unreadable: [off] });
    },
  };
}

function register(def) {
  def(unmapWindow('i1', 'close'));
  def(unmapWindow('i1b', 'unmapRegion'));
  def(swapWindow());
}

module.exports = { register };
