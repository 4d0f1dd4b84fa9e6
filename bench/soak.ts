// Soak benchmark (issue 24 #4): `npm run bench:soak -- --minutes N` (default 3). Not in CI, not in
// vitest. Simulated poison (injectPoison mode 'simulate') over many 2 MiB pages of several regions,
// vCPU load threads, guest resets, handovers, restarts (each life of the engine is its own process
// over the same files and journal; some end by SIGKILL) and a journal whose disk (a small tmpfs, as
// root) fills now and then. It ends by checking every byte and every recorded loss against what was
// injected, and prints the counts. Exit status 1 if anything was wrong, forgotten or invented.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { runLife } from './soak-life';
import { HUGE, newCounts, type SoakState } from './soak-model';

const DIR_2M = path.join(process.env.HUGETLB_RAS_DIR ?? '/mnt/hugetlb-ras', '2M');
const LIFE_MS = 20_000;

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

function mountJournalFs(dir: string): string | undefined {
  if (process.getuid?.() !== 0) {
    console.log('journal disk: not filled (not root: a small tmpfs cannot be mounted)');
    return undefined;
  }
  const r = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=1m,mode=0700', 'soak-journal', dir]);
  if (r.status !== 0) {
    console.log(`journal disk: not filled (mount tmpfs failed: ${String(r.stderr).trim()})`);
    return undefined;
  }
  console.log(`journal disk: a 1 MiB tmpfs at ${dir}, filled and emptied now and then`);
  return dir;
}

function main(): void {
  const life = arg('--life');
  if (life) {
    runLife(life).then(() => process.exit(0), (e) => { console.error(e); process.exit(2); });
    return;
  }
  const minutes = Number(arg('--minutes') ?? 3);
  if (!(minutes > 0)) throw new Error('--minutes must be a positive number');
  if (fs.statfsSync(DIR_2M).bsize !== HUGE) throw new Error(`${DIR_2M} is not a 2 MiB hugetlbfs (run scripts/setup-hugetlbfs.sh)`);
  console.log(`soak: ${minutes} min, simulated poison (no CONFIG_MEMORY_FAILURE here), 2 MiB pages only (no 1 GiB pages on this machine)`);

  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ras-soak-'));
  const jdir = path.join(tmp, 'journal');
  fs.mkdirSync(jdir, { mode: 0o700 });
  const journalFs = mountJournalFs(jdir);
  const seed = Number(arg('--seed') ?? (Date.now() % 100_000));
  const pages = [16, 24, 8];
  const st: SoakState = {
    seed, life: 0, lifeMs: LIFE_MS, final: false,
    journal: path.join(jdir, 'ledger.journal'), journalFs,
    regions: pages.map((n, i) => ({
      name: `ram${i}`, file: path.join(DIR_2M, `soak-${process.pid}-${i}`), size: n * HUGE,
      gpa: '0x' + (0x1_0000_0000 + i * 0x4000_0000).toString(16), stale: [], lost: [], writes: {},
    })),
    counts: newCounts(),
  };
  console.log(`seed ${seed}; regions of ${pages.join(', ')} huge pages of 2 MiB; lives of ${LIFE_MS / 1000} s`);
  const stateFile = path.join(tmp, 'state.json');
  const deadline = Date.now() + minutes * 60_000;
  let failed = false;
  try {
    for (;;) {
      st.final = Date.now() + 5_000 >= deadline && st.life > 0;
      st.lifeMs = Math.max(2_000, Math.min(LIFE_MS, deadline - Date.now()));
      fs.writeFileSync(stateFile, JSON.stringify(st));
      const r = spawnSync(process.execPath, [__filename, '--life', stateFile], { stdio: ['ignore', 'inherit', 'inherit'], timeout: st.lifeMs + 120_000 });
      if (r.status !== 0 && r.signal !== 'SIGKILL') throw new Error(`life ${st.life} failed: status ${r.status} signal ${r.signal}`);
      Object.assign(st, JSON.parse(fs.readFileSync(stateFile, 'utf8')) as SoakState);
      if (st.final) break;
      st.life++;
      st.counts.restarts++;
    }
  } catch (e) {
    failed = true;
    console.error(e);
  } finally {
    for (const m of st.regions) fs.rmSync(m.file, { force: true });
    if (journalFs) spawnSync('umount', [journalFs]);
    fs.rmSync(tmp, { recursive: true, force: true });
  }
  const c = st.counts;
  console.log('\nsoak counts');
  const rows: [string, number][] = [
    ['poisons', c.poisons], ['recoveries (huge pages split)', c.recoveries], ['frames lost (lost events)', c.lostEvents],
    ['resets', c.resets], ['handovers', c.handovers], ['  poisons between handover and close', c.poisonsAfterHandover],
    ['restarts', c.restarts], ['  of them after SIGKILL', c.crashes], ['journal disk full', c.journalFull],
    ['  journal write errors', c.journalErrors], ['  losses waiting for the journal', c.notDurableSeen], ['  handovers refused while full', c.handoverRefusedWhileFull],
    ['stale pages seen after restarts', c.staleSeen], ['bytes checked', c.bytesChecked],
    ['wrong', c.wrong], ['forgotten', c.forgotten], ['invented', c.invented],
  ];
  for (const [k, v] of rows) console.log(`  ${k.padEnd(38)} ${v}`);
  for (const n of c.notes.slice(0, 40)) console.log(`  ! ${n}`);
  if (c.notes.length > 40) console.log(`  ! ... ${c.notes.length - 40} more`);
  if (failed || c.wrong || c.forgotten || c.invented) process.exitCode = 1;
}

main();
