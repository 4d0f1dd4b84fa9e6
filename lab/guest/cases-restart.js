'use strict';
// Lab cases for restarts with REAL poison (issue 19, items 3 and 4). Each first life runs in the
// case's own process and ends with close(); the second life is a new process (handover-life.js), as
// a restarted VMM would be.
//   r1, r2: close() right after a real poison, while its recovery is in flight (lazy, eager): the
//           journal has the lost frame before close() returns; the next life finds the page stale.
//   r3:     a reset that fell back to anonymous memory (the pool has no free huge page: the native
//           test switch), the guest wrote there: the next life finds the page stale, never the
//           punched file's zeros as current; its own reset gives the page back.
//   r4:     a handover whose copy failed half way (the native test switch) after punching the really
//           poisoned page: the next life finds the page stale, never the half-copied file page.
// Registered from cases.js: require('./cases-restart').register(def).
const fs = require('fs');
const os = require('os');
const path = require('path');
const { spawnSync } = require('child_process');
const U = require('./util');
const { newData } = require('./handover-life');

const { MiB, SUB } = U;
const HP = 2 * MiB;
const PAGES = 3;
const SEED = 0x7e57;
const LIFE = path.join(__dirname, 'handover-life.js');

function native() {
  const root = process.env.LAB_PKG || path.resolve(__dirname, '..', '..');
  return require(path.join(root, 'dist', 'src', 'native.js')).native;
}

function journalPath(t, tag) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `lab-${tag}-`));
  t.onCleanup(() => fs.rmSync(dir, { recursive: true, force: true }));
  return path.join(dir, 'journal');
}

function secondLife(t, tag, journal, file, gpa0) {
  const r = spawnSync(process.execPath, [LIFE], {
    env: { ...process.env, J: journal, F: file, NAME: tag, PAGES: String(PAGES), GPA: '0x' + gpa0.toString(16), RESET: '1', RESET_PAGE: '1' },
    encoding: 'utf8',
    timeout: 180000,
  });
  const lineOut = (r.stdout || '').split('\n').find((l) => l.startsWith('HANDOVER-LIFE '));
  t.must(`${tag}: second life (a new process) reported`, r.status === 0 && !!lineOut, { status: r.status, signal: r.signal, stderr: (r.stderr || '').slice(-2000), stdout: (r.stdout || '').slice(-2000) });
  const out = JSON.parse(lineOut.slice('HANDOVER-LIFE '.length));
  t.note(`${tag}: second life`, { lost: out.lost, replay: out.replay, runs: out.runs, events: out.events, reset: out.reset });
  return out;
}

// The next life: huge page 1 stale (whole, inaccessible, reported), the others served from the file;
// its reset gives page 1 back as fresh memory.
function checkStale(t, tag, out) {
  t.eq(`${tag}: restart: lostPages: huge page 1, whole, stale`, (out.lost || []).map((l) => [l.offset, l.size, l.cause]), [[HP, HP, 'stale']]);
  const page1 = (out.runs || []).filter((r) => r[1] >= HP && r[1] < 2 * HP);
  t.eq(`${tag}: restart: every subpage of huge page 1 is inaccessible`, page1, [['poison', HP, 512]]);
  t.check(`${tag}: restart: no other subpage is inaccessible`, (out.runs || []).every((r) => r[0] !== 'poison' || r[1] === HP), { runs: out.runs });
  t.eq(`${tag}: restart: reset restores it`, out.reset && out.reset.restoredHugePages, 1);
  t.check(`${tag}: restart: the reset page is fresh zeroed memory`, out.resetPageZero === true, { resetPageZero: out.resetPageZero });
}

function closeInFlight(id, lazy) {
  return {
    id,
    name: `close() right after a real poison, its recovery in flight (${lazy ? 'lazy' : 'eager'}): the loss is journaled before close() returns; the next life finds the page stale`,
    kernels: ['6.12'],
    async run(t) {
      const tag = id;
      const gpa0 = (lazy ? 0xe_0000_0000n : 0xf_0000_0000n);
      const off = HP + 21 * SUB;
      const journal = journalPath(t, tag);
      const file = t.hugePath(HP, tag);
      const { engine } = t.openEngine({ journalPath: journal, lazyRecovery: lazy });
      const region = t.mapRegion(engine, { name: tag, path: file, size: PAGES * HP, guestPhysAddr: gpa0 });
      U.testing().fillPattern(region, SEED);
      let injected;
      try {
        injected = engine.injectPoison(region, off, { mode: 'madvise' });
      } catch (e) {
        t.note(`${tag}: injectPoison threw`, U.plain(e));
      }
      t.note(`${tag}: injectPoison`, U.plain(injected));
      engine.close(); // no whenIdle(): the recovery, or its events, are in flight
      const replay = U.pkg().readJournal(journal);
      t.eq(`${tag}: the journal holds the lost frame when close() returned`, replay.lost.map((f) => [f.offset, f.size]), [[off, SUB]]);
      t.eq(`${tag}: no journal warning`, replay.warnings, []);
      checkStale(t, tag, secondLife(t, tag, journal, file, gpa0));
    },
  };
}

function register(def) {
  def(closeInFlight('r1', true));
  def(closeInFlight('r2', false));

  def({
    id: 'r3',
    name: 'a reset that fell back to anonymous memory (no free huge page), then guest writes: the next life finds the page stale, not the punched file',
    kernels: ['6.12'],
    async run(t) {
      const tag = 'r3';
      const gpa0 = 0x10_0000_0000n;
      const off = HP + 5 * SUB;
      const journal = journalPath(t, tag);
      const file = t.hugePath(HP, tag);
      const { engine } = t.openEngine({ journalPath: journal });
      const region = t.mapRegion(engine, { name: tag, path: file, size: PAGES * HP, guestPhysAddr: gpa0 });
      U.testing().fillPattern(region, SEED);
      await t.inject(engine, region, off);
      await t.idle(engine);
      const n = native();
      n.testResetPoolEmpty(true);
      let ev;
      try {
        ev = await t.within('resetRegion()', engine.resetRegion(region), 120000);
      } finally {
        n.testResetPoolEmpty(false);
      }
      t.eq(`${tag}: the reset fell back to anonymous memory`, { restored: ev.restoredHugePages, stillSplit: ev.stillSplit }, { restored: 0, stillSplit: 1 });
      region.write(HP, newData(HP, HP)); // the guest runs on after its reset
      t.check(`${tag}: the guest's writes are there`, region.read(HP, HP).equals(newData(HP, HP)));
      t.eq(`${tag}: pread of the punched file page: zeros, not the guest's data`, U.pread(file, HP + 100, 4).data && [...U.pread(file, HP + 100, 4).data], [0, 0, 0, 0]);
      engine.close();
      const replay = U.pkg().readJournal(journal);
      t.eq(`${tag}: the journal says the page is split (private memory)`, replay.split.map((p) => [p.offset, p.size]), [[HP, HP]]);
      checkStale(t, tag, secondLife(t, tag, journal, file, gpa0));
    },
  });

  def({
    id: 'r4',
    name: 'a handover whose copy failed half way after punching the really poisoned page: the next life finds the page stale, not the half-copied file page',
    kernels: ['6.12'],
    async run(t) {
      const tag = 'r4';
      const gpa0 = 0x11_0000_0000n;
      const off = HP + 9 * SUB;
      const journal = journalPath(t, tag);
      const file = t.hugePath(HP, tag);
      const { engine } = t.openEngine({ journalPath: journal });
      const region = t.mapRegion(engine, { name: tag, path: file, size: PAGES * HP, guestPhysAddr: gpa0 });
      U.testing().fillPattern(region, SEED);
      await t.inject(engine, region, off);
      await t.idle(engine);
      region.write(HP + 64 * SUB, newData(HP + 64 * SUB, 64 * SUB));
      const n = native();
      n.testHandoverFailAfter(1 << 20);
      let res;
      try {
        res = await t.within('prepareHandover()', engine.prepareHandover(), 120000);
      } finally {
        n.testHandoverFailAfter(0);
      }
      t.note(`${tag}: prepareHandover result`, U.plain(res));
      t.eq(`${tag}: not handed over, after the punch`, res.notHandedOver.map((p) => [p.hugePageIndex, p.code, p.punched]), [[1, 'ERR_HANDOVER_FAILED', true]]);
      t.eq(`${tag}: nothing handed over`, res.handedOver.length, 0);
      engine.abortHandover();
      engine.close();
      checkStale(t, tag, secondLife(t, tag, journal, file, gpa0));
    },
  });
}

module.exports = { register };
