'use strict';
// Lab cases for the handover of a live update (issue 10 #4) with REAL poison: a split huge page's
// current data is in private memory and the file's page is really hwpoisoned. h1: prepareHandover
// punches the poisoned huge page, takes a fresh one and copies the data written after the split into
// it; a restarted process (handover-life.js) reads every healthy byte back. h2: no handover: the
// restarted process finds the page stale (inaccessible, reported) and a reset gives it back. h3 (6.1):
// the huge page is refused (lost whole): nothing to hand over, the restart keeps it lost, and a reset
// punches the really poisoned page and maps a fresh one.
// Registered from cases.js: require('./cases-handover').register(def, helpers).
const fs = require('fs');
const os = require('os');
const path = require('path');
const { spawnSync } = require('child_process');
const U = require('./util');
const { newData } = require('./handover-life');

const { MiB, SUB, hex, pkg } = U;
const HP = 2 * MiB;
const SEED = 0x5eed;
const PAGES = 3;
const LIFE = path.join(__dirname, 'handover-life.js');

function journalPath(t, tag) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `lab-${tag}-`));
  t.onCleanup(() => fs.rmSync(dir, { recursive: true, force: true }));
  return path.join(dir, 'journal');
}

// First life, in the case's own process: fill, poison huge page 1 (really), write new data over
// every healthy byte of the region after the split.
async function firstLife(t, tag, journal, file, gpa0, off, helpers, kernel) {
  const { engine, ev } = t.openEngine({ journalPath: journal });
  const region = t.mapRegion(engine, { name: tag, path: file, size: PAGES * HP, guestPhysAddr: gpa0 });
  U.testing().fillPattern(region, SEED);
  await t.inject(engine, region, off);
  await helpers.reportReached(t, engine, ev, region, off, SEED, kernel === '6.1' ? 'refused' : 'recovered');
  for (const [from, to] of [[0, HP], [2 * HP, PAGES * HP], ...(kernel === '6.1' ? [] : [[HP, off], [off + SUB, 2 * HP]])]) {
    region.write(from, newData(from, to - from));
  }
  return { engine, ev, region };
}

function secondLife(t, tag, journal, file, gpa0, reset) {
  const r = spawnSync(process.execPath, [LIFE], {
    env: { ...process.env, J: journal, F: file, NAME: tag, PAGES: String(PAGES), GPA: '0x' + gpa0.toString(16), RESET: reset ? '1' : '0', RESET_PAGE: '1' },
    encoding: 'utf8',
    timeout: 180000,
  });
  const lineOut = (r.stdout || '').split('\n').find((l) => l.startsWith('HANDOVER-LIFE '));
  t.must('second life (a new process) reported', r.status === 0 && !!lineOut, { status: r.status, signal: r.signal, stderr: (r.stderr || '').slice(-2000), stdout: (r.stdout || '').slice(-2000) });
  const out = JSON.parse(lineOut.slice('HANDOVER-LIFE '.length));
  t.note('second life', { lost: out.lost, replay: out.replay, runs: out.runs, events: out.events, reset: out.reset, pools: [out.poolBeforeReset, out.poolAfterReset] });
  return out;
}

function filePage(file, page) {
  return U.pread(file, page * HP, HP);
}

function register(def, helpers) {
  def({
    id: 'h1',
    name: 'handover with real poison: punch the poisoned huge page, fresh page, copy; a new process reads every healthy byte written after the split',
    kernels: ['6.12'],
    async run(t) {
      const gpa0 = 0xb_0000_0000n;
      const off = HP + 17 * SUB;
      const journal = journalPath(t, 'h1');
      const file = t.hugePath(HP, 'h1');
      const { engine, ev, region } = await firstLife(t, 'h1', journal, file, gpa0, off, helpers, '6.12');
      t.eq("h1: one 'recovered' event", ev.of('recovered', region, 1).length, 1);
      t.note('h1: pread of the lost frame from the file before the handover', U.pread(file, off, SUB).errno || 'read');
      const p1 = U.pool(HP);
      const res = await t.within('prepareHandover()', engine.prepareHandover(), 120000);
      const p2 = U.pool(HP);
      t.note('h1: prepareHandover result', U.plain(res));
      t.note('h1: pool before / after the handover', { before: p1, after: p2 });
      t.eq('h1: notHandedOver', U.plain(res.notHandedOver), []);
      t.eq(
        'h1: handedOver: huge page 1, every healthy byte copied, the lost frame kept lost',
        U.plain(res.handedOver),
        U.plain([{ region: 'h1', hugePageIndex: 1, hugePageGuestPhysAddr: gpa0 + BigInt(HP), bytesCopied: HP - SUB, lostGuestPhysAddrs: [gpa0 + BigInt(off)] }]),
      );
      // Same as a reset (case 7): the punched, really poisoned page never comes back to the pool; the
      // fresh page is taken from it.
      t.eq('h1: pool: nr_hugepages unchanged', p2.total, p1.total);
      t.eq('h1: pool: free_hugepages - 1 (the fresh page; the poisoned one is never freed)', p2.free, p1.free - 1);
      const fp = filePage(file, 1);
      t.eq('h1: the file page reads whole (a fresh, healthy huge page)', fp.n, HP);
      if (fp.n === HP) {
        t.check('h1: the file holds the new data before the lost frame', fp.data.subarray(0, 17 * SUB).equals(newData(HP, 17 * SUB)));
        t.check('h1: the file holds zeros at the lost frame', fp.data.subarray(17 * SUB, 18 * SUB).equals(Buffer.alloc(SUB)));
        t.check('h1: the file holds the new data after the lost frame', fp.data.subarray(18 * SUB).equals(newData(off + SUB, HP - 18 * SUB)));
      }
      engine.close();
      const out = secondLife(t, 'h1', journal, file, gpa0, false);
      t.eq('h1: restart: every subpage reads the data written after the split, but the lost frame', out.runs, [['new', 0, 512 + 17], ['poison', off, 1], ['new', off + SUB, PAGES * 512 - 512 - 18]]);
      t.eq('h1: restart: lostPages', out.lost.map((l) => [l.offset, l.size, l.cause]), [[off, SUB, 'replayed']]);
      t.eq('h1: restart: stats().replay', out.replay, { handedOverHugePages: 1, staleHugePages: [] });
    },
  });

  def({
    id: 'h2',
    name: 'no handover with real poison: the restarted process finds the split page stale (inaccessible, reported); a reset gives it back',
    kernels: ['6.12'],
    async run(t) {
      const gpa0 = 0xc_0000_0000n;
      const off = HP + 33 * SUB;
      const journal = journalPath(t, 'h2');
      const file = t.hugePath(HP, 'h2');
      const { engine } = await firstLife(t, 'h2', journal, file, gpa0, off, helpers, '6.12');
      engine.close();
      const out = secondLife(t, 'h2', journal, file, gpa0, true);
      t.eq('h2: restart: the split huge page is inaccessible, the others current', out.runs, [['new', 0, 512], ['poison', HP, 512], ['new', 2 * HP, 512]]);
      t.eq('h2: restart: lostPages: the whole huge page, stale', out.lost.map((l) => [l.offset, l.size, l.cause]), [[HP, HP, 'stale']]);
      t.eq('h2: restart: a lost event says stale', out.events.map((e) => [e.offset, e.size, e.cause]), [[HP, HP, 'stale']]);
      t.eq(
        'h2: restart: stats().replay.staleHugePages',
        out.replay && out.replay.staleHugePages,
        [{ region: 'h2', hugePageIndex: 1, hugePageGuestPhysAddr: hex(gpa0 + BigInt(HP)), size: HP, lostGuestPhysAddrs: [hex(gpa0 + BigInt(off))] }],
      );
      t.eq('h2: reset: the stale page restored (the really poisoned page punched, a fresh one mapped)', out.reset && out.reset.restoredHugePages, 1);
      t.check('h2: reset: the page is fresh zeroed memory', out.resetPageZero === true, { resetPageZero: out.resetPageZero });
      t.eq('h2: reset: nothing lost any more', out.lostAfterReset, 0);
    },
  });

  def({
    id: 'h3',
    name: '6.1: a refused (whole) huge page is not handed over; the restart keeps it lost, a reset punches the really poisoned page',
    kernels: ['6.1'],
    async run(t) {
      const gpa0 = 0xd_0000_0000n;
      const off = HP + 9 * SUB;
      const journal = journalPath(t, 'h3');
      const file = t.hugePath(HP, 'h3');
      const { engine, region } = await firstLife(t, 'h3', journal, file, gpa0, off, helpers, '6.1');
      t.eq('h3: the huge page is lost whole', t.lostOf(engine, region).map((l) => [l.offset, l.size, l.cause]), [[HP, HP, 'refused']]);
      const res = await t.within('prepareHandover()', engine.prepareHandover(), 120000);
      t.note('h3: prepareHandover result', U.plain(res));
      t.eq('h3: nothing to hand over (no split page)', { handed: res.handedOver.length, not: res.notHandedOver.length, bytes: res.bytesCopied }, { handed: 0, not: 0, bytes: 0 });
      t.eq('h3: the file page is still the poisoned one (not punched): pread EIO', U.pread(file, off, SUB).errno, 'EIO');
      engine.close();
      const out = secondLife(t, 'h3', journal, file, gpa0, true);
      t.eq('h3: restart: the refused page stays inaccessible, the others current', out.runs, [['new', 0, 512], ['poison', HP, 512], ['new', 2 * HP, 512]]);
      t.eq('h3: restart: lostPages (replayed, not stale)', out.lost.map((l) => [l.offset, l.size, l.cause]), [[HP, HP, 'replayed']]);
      t.eq('h3: reset: restored (the really poisoned page punched, a fresh one mapped)', out.reset && out.reset.restoredHugePages, 1);
      t.check('h3: reset: the page is fresh zeroed memory', out.resetPageZero === true, { resetPageZero: out.resetPageZero });
    },
  });
}

module.exports = { register };
