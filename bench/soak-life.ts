// One life of the soak (bench/soak.ts runs each in its own process): open the engine over the same
// files and journal, check the ledger against the model, then poison, write, reset, fill the
// journal's disk while vCPU load threads run, check every byte, and end by a handover, a close
// or a crash (SIGKILL). The model and the counts go back through the state file.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { RasEngine, type Region } from '../src/index';
import { fillPattern, startVcpuLoad, verifyPattern, type VcpuLoad } from '../src/testing';
import {
  diffBytes, expectedLosses, expectedUnreadable, HUGE, markStale, patternBlock, splitPages, SUB, writtenBlock,
  type RegionModel, type SoakState,
} from './soak-model';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function runLife(stateFile: string): Promise<void> {
  const st = JSON.parse(fs.readFileSync(stateFile, 'utf8')) as SoakState;
  const c = st.counts;
  let rnd = (st.seed * 7919 + st.life * 104729) >>> 0;
  const rand = (n: number) => { rnd = (Math.imul(rnd, 1103515245) + 12345) >>> 0; return (rnd >>> 8) % n; };
  const save = () => fs.writeFileSync(stateFile, JSON.stringify(st));
  const log = (s: string) => process.stdout.write(`  life ${st.life}: ${s}\n`);

  const engine = RasEngine.open({ journalPath: st.journal });
  let recoveredHere = 0;
  engine.on('recovered', () => { c.recoveries++; recoveredHere++; });
  engine.on('error', () => { c.journalErrors++; });
  let lostEvents = 0;
  let poisonsHere = 0;
  engine.on('lost', (e) => { if (e.cause === 'split-poison') lostEvents++; });
  engine.on('refused', () => { c.notes.push(`life ${st.life}: a huge page was refused`); });
  const regions: Region[] = st.regions.map((m) => engine.mapRegion({ name: m.name, path: m.file, size: m.size, guestPhysAddr: BigInt(m.gpa) }));
  await engine.whenIdle({ timeoutMs: 30_000 });
  if (st.life === 0) for (const r of regions) fillPattern(r, st.seed);

  const checkLedger = (when: string) => {
    const have = new Map<string, Set<string>>();
    for (const m of st.regions) have.set(m.name, new Set());
    for (const l of engine.lostPages()) {
      have.get(l.region)?.add(`${l.offset}:${l.size}`);
      if (l.cause === 'stale') c.staleSeen++;
    }
    st.regions.forEach((m) => {
      const want = expectedLosses(m);
      const got = have.get(m.name) as Set<string>;
      for (const k of want) if (!got.has(k)) { c.forgotten++; c.notes.push(`life ${st.life} ${when}: ${m.name} ${k} injected, not recorded`); }
      for (const k of got) if (!want.has(k)) { c.invented++; c.notes.push(`life ${st.life} ${when}: ${m.name} ${k} recorded, not injected`); }
    });
  };

  const checkBytes = (i: number) => {
    const m = st.regions[i];
    const r = regions[i];
    const v = verifyPattern(r, st.seed);
    const want = expectedUnreadable(m);
    const got = new Set(v.unreadableOffsets);
    for (const o of want) if (!got.has(o)) { c.wrong += SUB; c.notes.push(`life ${st.life}: ${m.name} +${o} readable, should be lost`); }
    for (const o of got) if (!want.has(o)) { c.wrong += SUB; c.notes.push(`life ${st.life}: ${m.name} +${o} unreadable, not lost`); }
    let patternDiff = 0;
    for (const [k, gen] of Object.entries(m.writes)) {
      const o = Number(k);
      if (got.has(o)) continue;
      const actual = r.read(o, SUB);
      patternDiff += diffBytes(actual, patternBlock(st.seed, o));
      const bad = diffBytes(actual, writtenBlock(o, gen));
      if (bad) { c.wrong += bad; c.notes.push(`life ${st.life}: ${m.name} written block +${o}: ${bad} bytes wrong`); }
    }
    const outside = v.wrongBytes - patternDiff;
    if (outside !== 0) { c.wrong += Math.abs(outside); c.notes.push(`life ${st.life}: ${m.name}: ${outside} bytes not the pattern outside written blocks (first +${v.firstWrongOffset})`); }
    c.bytesChecked += v.checkedBytes;
  };

  checkLedger('after mapRegion');
  // What a restart sees: handed-over pages with the data written before, stale pages unreadable.
  regions.forEach((_, i) => checkBytes(i));
  if (st.final) {
    log('the final check (a restart that only maps and verifies)');
    engine.close();
    save();
    return;
  }

  // vCPU load threads over the first half of each region; written blocks only in the second half.
  const loads: (VcpuLoad | undefined)[] = [];
  let vcpuWrong = 0;
  const startLoad = (i: number) => {
    const r = regions[i];
    loads[i] = startVcpuLoad(engine, { region: r, threads: 1, seed: st.seed, writeRatio: 0.25, window: { offset: 0, length: r.size / 2 } });
  };
  const stopLoad = async (i: number) => {
    const l = loads[i];
    loads[i] = undefined;
    if (l) vcpuWrong += (await l.stop()).wrongBytes;
  };
  regions.forEach((_, i) => startLoad(i));

  const healthy = (m: RegionModel, lo: number, hi: number): number | undefined => {
    for (let t = 0; t < 50; t++) {
      const o = lo + rand((hi - lo) / SUB) * SUB;
      if (!m.stale.includes(Math.floor(o / HUGE)) && !m.lost.includes(o)) return o;
    }
    return undefined;
  };

  const poison = async () => {
    const i = rand(regions.length);
    const m = st.regions[i];
    const o = healthy(m, 0, m.size);
    if (o === undefined) return;
    const kind = rand(2) ? 'AR' : 'AO';
    const signal = rand(3) !== 0;
    engine.injectPoison(regions[i], o, { mode: 'simulate', kind, signal });
    m.lost.push(o);
    delete m.writes[o];
    c.poisons++;
    poisonsHere++;
    // A silent poison is reported at the next access: make one (the vCPU may have made it already).
    if (!signal) try { regions[i].read(o, 1); } catch { /* the poison */ }
    await engine.whenIdle({ timeoutMs: 30_000 });
  };

  const write = () => {
    const i = rand(regions.length);
    const m = st.regions[i];
    const o = healthy(m, m.size / 2, m.size);
    if (o === undefined) return;
    const gen = (m.writes[o] ?? 0) + 1;
    regions[i].write(o, writtenBlock(o, gen));
    m.writes[o] = gen;
  };

  const reset = async () => {
    const i = rand(regions.length);
    const m = st.regions[i];
    await stopLoad(i);
    await engine.whenIdle({ timeoutMs: 30_000 });
    const pages = new Set([...m.stale, ...m.lost.map((o) => Math.floor(o / HUGE))]);
    const ev = await engine.resetRegion(regions[i]);
    c.resets++;
    if (ev.restoredHugePages !== pages.size || ev.stillSplit !== 0 || ev.skipped.length) {
      c.notes.push(`life ${st.life}: reset ${m.name}: restored ${ev.restoredHugePages} of ${pages.size}, stillSplit ${ev.stillSplit}, skipped ${ev.skipped.length}`);
    }
    // Fresh memory: zero, then the guest's boot fills it again.
    for (const h of pages) {
      const bad = HUGE - countZero(regions[i].read(h * HUGE, HUGE));
      if (bad) { c.wrong += bad; c.notes.push(`life ${st.life}: reset ${m.name} page ${h}: ${bad} bytes not zero`); }
      c.bytesChecked += HUGE;
    }
    fillPattern(regions[i], st.seed);
    m.stale = [];
    m.lost = [];
    m.writes = {};
    startLoad(i);
  };

  const journalFull = async () => {
    if (!st.journalFs) return;
    const filler = path.join(st.journalFs, 'filler');
    const fd = fs.openSync(filler, 'w');
    const chunk = Buffer.alloc(64 << 10, 1);
    try { for (;;) fs.writeSync(fd, chunk); } catch { /* ENOSPC: full */ }
    try { for (;;) fs.writeSync(fd, chunk.subarray(0, 512)); } catch { /* the last bytes */ }
    fs.closeSync(fd);
    c.journalFull++;
    // The file's last tmpfs page may still take a few records: poison until one does not fit.
    for (let k = 0; k < 60 && (engine.stats().journal?.notDurable ?? 0) === 0; k++) await poison();
    if (engine.stats().journal?.notDurable === 0) c.notes.push(`life ${st.life}: journal full but every loss durable`);
    else c.notDurableSeen += engine.stats().journal?.notDurable ?? 0;
    try {
      await engine.prepareHandover();
      c.notes.push(`life ${st.life}: prepareHandover succeeded while losses were not durable`);
      c.wrong++;
      engine.abortHandover();
    } catch (e) {
      if ((e as { code?: string }).code === 'ERR_JOURNAL_WRITE') c.handoverRefusedWhileFull++;
      else c.notes.push(`life ${st.life}: prepareHandover while full: ${(e as Error).message}`);
    }
    fs.rmSync(filler);
    for (let k = 0; k < 100 && (engine.stats().journal?.notDurable ?? 0) > 0; k++) await sleep(50);
    if ((engine.stats().journal?.notDurable ?? 0) > 0) c.notes.push(`life ${st.life}: losses still not durable 5 s after the disk was emptied`);
  };

  const end = Date.now() + st.lifeMs;
  let fullDone = false;
  while (Date.now() < end) {
    const op = rand(100);
    if (op < 45) await poison();
    else if (op < 85) write();
    else if (op < 88) await reset();
    else if (!fullDone) { fullDone = true; await journalFull(); }
    await sleep(rand(40));
  }
  for (let i = 0; i < regions.length; i++) await stopLoad(i);
  if (vcpuWrong) { c.wrong += vcpuWrong; c.notes.push(`life ${st.life}: vCPU loads read ${vcpuWrong} wrong bytes`); }
  await engine.whenIdle({ timeoutMs: 30_000 });
  checkLedger('before the end');
  c.lostEvents += lostEvents;
  // A poison's frame is reported once: by the huge page's `recovered` (its first) or a `lost` event.
  if (recoveredHere + lostEvents !== poisonsHere) {
    c.notes.push(`life ${st.life}: ${poisonsHere} poisons, ${recoveredHere} recovered + ${lostEvents} split-poison lost events`);
  }
  regions.forEach((_, i) => checkBytes(i));

  const ending = ['handover', 'crash', 'handover', 'close'][st.life % 4];
  let handedOver = new Map<string, Set<number>>();
  if (ending === 'handover') {
    const h = await engine.prepareHandover();
    c.handovers++;
    for (const p of h.handedOver) {
      if (!handedOver.has(p.region)) handedOver.set(p.region, new Set());
      handedOver.get(p.region)?.add(p.hugePageIndex);
    }
    const want = st.regions.reduce((n, m) => n + splitPages(m).length, 0);
    if (h.handedOver.length !== want) c.notes.push(`life ${st.life}: handed over ${h.handedOver.length} of ${want} split pages (${h.notHandedOver.map((p) => p.code).join(',')})`);
    // Now and then a memory error between the handover and the close: recovered all the same, and
    // its journal record voids the handover of its huge page (stale for the successor).
    if (rand(2)) {
      const i = rand(regions.length);
      const m = st.regions[i];
      const o = healthy(m, 0, m.size);
      if (o !== undefined) {
        engine.injectPoison(regions[i], o, { mode: 'simulate', kind: 'AO' });
        m.lost.push(o);
        delete m.writes[o];
        c.poisons++;
        c.poisonsAfterHandover++;
        await engine.whenIdle({ timeoutMs: 30_000 });
        handedOver.get(m.name)?.delete(Math.floor(o / HUGE));
      }
    }
  } else handedOver = new Map();
  for (const m of st.regions) markStale(m, handedOver.get(m.name) ?? new Set());
  log(`poisons ${c.poisons}, resets ${c.resets}, ends by ${ending}`);
  if (ending === 'crash') {
    c.crashes++;
    save();
    process.kill(process.pid, 'SIGKILL');
    await sleep(10_000);
  }
  engine.close();
  save();
}

function countZero(b: Buffer): number {
  let n = 0;
  for (let i = 0; i < b.length; i++) if (b[i] === 0) n++;
  return n;
}
