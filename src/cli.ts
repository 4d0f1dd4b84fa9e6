#!/usr/bin/env node
// hugetlb-ras command line: `demo` (the main job, on an embedded default), `status` and `journal <path>`.
// The reference VMM's KVM demo is the VMM's own command (hugetlb-ras-kvm-demo): not imported here.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { RasEngine } from './engine';
import { guardWhy, hwpoisonWhyNot } from './guards';
import { readJournal } from './ledger/file';
import { formatJournal } from './ledger/print';
import { benchNative } from './native';
import { fillPattern, startVcpuLoad, verifyPattern } from './testing';
import type { RecoveredEvent, RefusedEvent, PoisonEvent } from './events';
import { runStatus } from './status/command';

const USAGE = `usage:
  hugetlb-ras demo [--page-size 2M|1G] [--dir DIR] [--threads N] [--mode auto|simulate|madvise] [--mem-lock on|on-fault]
  hugetlb-ras status --socket PATH | --journal PATH [--json]
  hugetlb-ras journal PATH
  hugetlb-ras --help | --version`;

const HELP = `hugetlb-ras: memory-error recovery for VMMs on hugetlbfs (a poisoned huge page becomes a 4 KiB loss)

${USAGE}

commands:
  demo          maps a region on hugetlbfs, fills it with a pattern, runs vCPU threads over it, injects
                poison into one 4 KiB subpage, recovers (the huge page is split), verifies every healthy
                byte and resets the region. Exits 0 when every healthy byte is back.
  status        a running engine's status (its statusSocket) or a journal's: regions, lost frames,
                stale pages, reserve, journal health, guard and recovery path; --json for tools.
                Exit 0 printed, 1 could not be read, 2 usage (hugetlb-ras status --help says more).
  journal PATH  prints a journal of lost frames (regions, lost frames, history, warnings); read only.

demo options:
  --page-size 2M|1G  huge page size (default 2M: 64 MiB of 2 MiB pages; 1G: one 1 GiB page)
  --dir DIR          where the hugetlbfs mounts are: DIR/2M and DIR/1G (default $HUGETLB_RAS_DIR,
                     else /mnt/hugetlb-ras)
  --threads N        vCPU threads reading and writing the poisoned huge page (default 4)
  --mode MODE        how the poison is injected (default auto):
                       madvise   real MADV_HWPOISON: needs root (CAP_SYS_ADMIN) and a kernel with
                                 CONFIG_MEMORY_FAILURE
                       simulate  the same signal, siginfo and EIO on the poisoned subpage, without
                                 kernel support (any user, any kernel)
                       auto      madvise where it works, else simulate (the demo says why)
  --mem-lock on|on-fault  lock the guest RAM as QEMU's -overcommit mem-lock does: mlock, or
                     mlock2(MLOCK_ONFAULT) (Region.lockMemory); the demo checks that the memory
                     standing in for the poisoned huge page is locked too (VmFlags lo)

environment:
  HUGETLB_RAS_DIR    the hugetlbfs mounts' parent directory (default /mnt/hugetlb-ras), as for
                     scripts/setup-hugetlbfs.sh, which reserves huge pages and mounts them (as root).

The reference VMM's KVM demo (a KVM guest gets a machine check for each lost frame; needs /dev/kvm) is
its own command: hugetlb-ras-kvm-demo [--vcpus N] (in the checkout: npm run demo:kvm).
In the checkout run it as: npm run demo -- --page-size 1G (npx would reinstall and rebuild the package).
--help, -h   this text.  --version, -V   the package's version.`;

/** VMAs of [addr, addr+len) whose VmFlags lack `lo` (locked), from /proc/self/smaps. */
function unlockedVmas(addr: bigint, len: number): number {
  let n = 0;
  let inside = false;
  for (const line of fs.readFileSync('/proc/self/smaps', 'utf8').split('\n')) {
    const m = /^([0-9a-f]+)-([0-9a-f]+) /.exec(line);
    if (m) inside = BigInt('0x' + m[1]) < addr + BigInt(len) && BigInt('0x' + m[2]) > addr;
    else if (inside && line.startsWith('VmFlags:') && !line.slice(8).trim().split(/\s+/).includes('lo')) n++;
  }
  return n;
}

function version(): string {
  return (JSON.parse(fs.readFileSync(path.join(__dirname, '..', '..', 'package.json'), 'utf8')) as { version: string }).version;
}

interface DemoOptions {
  pageSize: '2M' | '1G';
  dir: string;
  threads: number;
  mode: 'auto' | 'simulate' | 'madvise';
  memLock?: 'on' | 'on-fault';
}

const hex = (v: bigint | number) => '0x' + v.toString(16);
const us = (ns: bigint | number) => `${(Number(ns) / 1000).toFixed(0)} us`;
const bytes = (n: number) => n.toLocaleString('en-US');

/** A command line the demo cannot run: exit 2 with the message, before anything is opened. */
class UsageError extends Error {}

function parseDemo(args: string[]): DemoOptions {
  const o: DemoOptions = { pageSize: '2M', dir: process.env.HUGETLB_RAS_DIR ?? '/mnt/hugetlb-ras', threads: 4, mode: 'auto' };
  for (let i = 0; i < args.length; i++) {
    const v = args[i + 1];
    switch (args[i]) {
      case '--page-size':
        if (v !== '2M' && v !== '1G') throw new UsageError('--page-size is 2M or 1G');
        o.pageSize = v;
        i++;
        break;
      case '--dir':
        if (v === undefined || v === '' || v.startsWith('--')) throw new UsageError('--dir needs a value (a directory holding 2M/ and 1G/)');
        o.dir = v;
        i++;
        break;
      case '--threads':
        if (!/^[0-9]+$/.test(v ?? '') || Number(v) < 1 || Number(v) > 64) throw new UsageError('--threads is an integer 1..64');
        o.threads = Number(v);
        i++;
        break;
      case '--mode':
        if (v !== 'auto' && v !== 'simulate' && v !== 'madvise') throw new UsageError('--mode is auto, simulate or madvise');
        o.mode = v;
        i++;
        break;
      case '--mem-lock':
        if (v !== 'on' && v !== 'on-fault') throw new Error('--mem-lock is on or on-fault');
        o.memLock = v;
        i++;
        break;
      default:
        throw new UsageError(`unknown option ${args[i]}\n${USAGE}`);
    }
  }
  return o;
}

async function demo(o: DemoOptions): Promise<number> {
  const huge = o.pageSize === '1G' ? 1 << 30 : 2 << 20;
  const size = o.pageSize === '1G' ? huge : 32 * huge; // 64 MiB of 2 MiB pages, or one 1 GiB page
  const file = path.join(o.dir, o.pageSize, `demo-${process.pid}`);
  const gpa = 0x1_0000_0000n;
  const seed = 2024;
  const engine = RasEngine.open();
  const hwpoisonNot = hwpoisonWhyNot();
  const poisons: PoisonEvent[] = [];
  const outcomes: (RecoveredEvent | RefusedEvent)[] = [];
  engine.on('poison', (e) => poisons.push(e));
  engine.on('recovered', (e) => outcomes.push(e));
  engine.on('refused', (e) => outcomes.push(e));
  try {
    const region = engine.mapRegion({ name: 'ram0', path: file, size, guestPhysAddr: gpa });
    const page = o.pageSize === '1G' ? 0 : 5;
    const offset = page * huge + 0x3000 * 37; // a subpage in the middle of the huge page
    const st = engine.stats();
    const guardWords = {
      uffd: `userfaultfd poison markers (${st.userfaultfd.kind} userfaultfd; no root needed, no healthy page retired)`,
      hwpoison: 'MADV_HWPOISON (root: the kernel retires one healthy 4 KiB page per lost frame)',
      guard: 'guard pages (guard markers or PROT_NONE)',
    } as const;
    console.log(`hugetlb-ras demo: Linux ${os.release()}, lost subpages kept out by ${guardWords[engine.lostPageGuard]}`);
    console.log(`  guard ${engine.lostPageGuard}: ${guardWhy(engine.lostPageGuard, 'auto')}`);
    if (st.userfaultfd.kind === 'none') console.log(`  no userfaultfd (${st.userfaultfd.syscall}: errno ${st.userfaultfd.errno}): ${st.userfaultfd.advice}`);
    if (st.kvmWarning) console.log(`  WARNING for KVM guests: ${st.kvmWarning}`);
    console.log(`  region ram0: ${size >> 20} MiB of ${o.pageSize} pages on ${file}, guest physical ${hex(gpa)}`);
    if (o.memLock) {
      region.lockMemory(o.memLock);
      console.log(`  guest RAM locked (--mem-lock ${o.memLock}): ${o.memLock === 'on' ? 'mlock' : 'mlock2(MLOCK_ONFAULT)'}`);
    }
    fillPattern(region, seed);
    const load = startVcpuLoad(engine, { region, threads: o.threads, seed, window: { offset: page * huge, length: huge } });
    await new Promise((r) => setTimeout(r, 100));
    const injected = engine.injectPoison(region, offset, { mode: o.mode });
    console.log(`  poison (${injected.mode}): host ${hex(injected.hostAddress)}, guest physical ${hex(region.guestPhysAddrOf(offset))}`);
    if (injected.mode === 'simulate')
      console.log(
        o.mode === 'simulate'
          ? '  poison simulated because --mode simulate was asked for'
          : `  poison simulated because real poison (MADV_HWPOISON) is not usable here: ${hwpoisonNot}`,
      );
    else console.log('  poison is real: MADV_HWPOISON (root, CONFIG_MEMORY_FAILURE)');
    await engine.whenIdle({ timeoutMs: 120_000 });
    await new Promise((r) => setTimeout(r, 100));
    const report = await load.stop();
    const limitNs = benchNative().memcpyLimit(huge);
    for (const p of poisons.filter((p) => !p.alreadyLost).slice(0, 1))
      console.log(`  SIGBUS ${p.kind} lsb ${p.reportedLsb}, handled with the region's page size (${o.pageSize}), not the lsb`);
    for (const out of outcomes) {
      if ('reason' in out) {
        console.log(`  REFUSED huge page ${out.hugePageIndex}: ${out.reason}: ${out.message}; whole ${out.size >> 20} MiB lost`);
      } else {
        const ratio = (ns: bigint) => `${(Number(ns) / limitNs).toFixed(2)}x`;
        if (out.path === 'lazy')
          console.log(
            `  recovered huge page ${out.hugePageIndex} on the lazy path: vCPUs released after ${us(out.totalNs)} (${ratio(out.totalNs)} of a memcpy of ` +
              `${o.pageSize} here, ${us(limitNs)}), whole page in place after ${us(out.filledNs)} (${ratio(out.filledNs)}), ` +
              `${bytes(out.bytesRecovered)} bytes back in ${out.readCalls} reads`,
          );
        else
          console.log(
            `  recovered huge page ${out.hugePageIndex} on the eager path in ${us(out.durationNs)} (memcpy of ${o.pageSize} here: ${us(limitNs)}; ` +
              `${ratio(out.durationNs)}), ${bytes(out.bytesRecovered)} bytes back in ${out.readCalls} reads` +
              ` (not lazy: ${engine.stats().recovery.lazyUnavailable ?? 'an action-optional report, or the page could not go in lazily'})`,
          );
        console.log(`  lost 4 KiB frames (inject an MCE for these): ${out.lostGuestPhysAddrs.map(hex).join(', ')}`);
      }
    }
    const stalls = report.stalls.map((s) => Number(s.stallNs)).sort((a, b) => a - b);
    console.log(
      `  vCPUs: ${o.threads} threads, ${bytes(report.accesses)} accesses, ${report.wrongBytes} wrong bytes, ` +
        `${stalls.length} stalls${stalls.length ? ` (max ${us(stalls[stalls.length - 1])})` : ''}, ` +
        `${report.mceReports.length} MCE reports on lost memory`,
    );
    const check = verifyPattern(region, seed);
    console.log(`  verify: ${bytes(check.checkedBytes)} bytes checked, ${check.wrongBytes} wrong, ${check.unreadableOffsets.length} subpages unreadable`);
    const unlocked = o.memLock ? unlockedVmas(region.address + BigInt(page * huge), huge) : 0;
    if (o.memLock) {
      const m = engine.stats().memory;
      console.log(
        `  locked: ${unlocked === 0 ? 'the memory standing in for the huge page is locked (VmFlags lo)' : `${unlocked} VMA(s) of the replacement NOT locked`}` +
          (m.lockFailures ? ` (RLIMIT_MEMLOCK refused ${m.lockFailures} time(s), errno ${m.lockErrno})` : ''),
      );
    }
    const reset = await engine.resetRegion(region);
    console.log(`  guest reset: ${reset.restoredHugePages} huge page(s) restored, ${reset.stillSplit} still split${reset.reason ? ` (${reset.reason})` : ''}`);
    const expectedLost = outcomes.every((x) => !('reason' in x)) ? 1 : huge / 4096;
    const ok = unlocked === 0 && check.wrongBytes === 0 && report.wrongBytes === 0 && check.unreadableOffsets.length === expectedLost && outcomes.length === 1;
    console.log(ok ? 'OK: every healthy byte is back' : 'FAILED: see above');
    return ok ? 0 : 1;
  } finally {
    engine.close();
    fs.rmSync(file, { force: true });
  }
}

async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  if (cmd === '--help' || cmd === '-h' || cmd === 'help' || (cmd === 'demo' && (rest.includes('--help') || rest.includes('-h')))) {
    console.log(HELP);
    return 0;
  }
  if (cmd === '--version' || cmd === '-V') {
    console.log(version());
    return 0;
  }
  if (cmd === 'demo' && rest.includes('--kvm')) {
    console.error('hugetlb-ras: the KVM demo is the reference VMM\'s own command: hugetlb-ras-kvm-demo [--vcpus N]');
    return 2;
  }
  if (cmd === 'demo' && rest.includes('--migrate')) {
    // The migration demo is the reference VMM's command, in its own process (its SIGBUS handler first).
    const demo = path.join(__dirname, '..', 'vmm', 'src', 'demo.js');
    return spawnSync(process.execPath, [demo, ...rest], { stdio: 'inherit' }).status ?? 1;
  }
  if (cmd === 'status') return runStatus(rest, { out: (t) => console.log(t), err: (t) => console.error(t) });
  if (cmd === 'demo') return demo(parseDemo(rest));
  if (cmd === 'journal' && rest.length === 1) {
    const replay = readJournal(rest[0]);
    process.stdout.write(formatJournal(replay) + '\n');
    // A bad record may have been a loss: not a clean journal.
    return replay.warnings.some((w) => w.code === 'ERR_JOURNAL_BAD_RECORD') ? 1 : 0;
  }
  console.error(`${USAGE}\n(hugetlb-ras --help says more)`);
  return 2;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: NodeJS.ErrnoException) => {
    console.error(`hugetlb-ras: ${err.message}${err.code ? ` [${err.code}]` : ''}`);
    process.exit(err instanceof UsageError ? 2 : 1);
  },
);
