// The reference VMM's reading of its Linux guest's console (vmm/src/linux-console.ts): lines as the
// lab's L1-L3 print them, the walker's heartbeats with and without the guest kernel's
// HardwareCorrupted count, its SIGBUS lines, its bye, and the guest kernel's lines for a pfn.
import { describe, expect, it } from 'vitest';
import { GuestConsole } from '../vmm/src/linux-console';

describe('GuestConsole', () => {
  it('reads targets, heartbeats (hwcorrupted_kb when the walker prints it), SIGBUS, bye and the kernel\'s lines for a pfn', () => {
    const c = new GuestConsole();
    const lines = [
      '[   13.170111] walker: target a2 page=1455 va=0x7fcfe631d000 pfn=0x60be gpa=0x60be000',
      '[   13.223223] walker: heartbeat pass=1 pages=5820 wrong=0 lost=0 ms=48 worker=1 cpu=1',
      '[   15.188698] mce: Uncorrected hardware memory error in user-access at 60be000',
      '[   15.475540] Memory failure: 0x60be: recovery action for dirty LRU page: Recovered',
      '[   15.475541] Memory failure: 0x60bef: recovery action for dirty LRU page: Recovered',
      '[   15.555210] walker: SIGBUS BUS_MCEERR_AR addr=0x7fcfe631d000 lsb=12 page=1455 pfn=0x60be: fresh page mapped, pattern restored, lost=1',
      '[   15.613364] walker: heartbeat pass=2 pages=5820 wrong=3 lost=1 ms=499 worker=0 cpu=0 hwcorrupted_kb=4',
      '[   16.000000] walker: bye passes=10 wrong=0 lost=1 lost_pfns=0x60be workers=4 cpus=0,1,2,3 failed_workers=0',
    ];
    lines.forEach((l, i) => c.add(i, l));
    expect(c.lines.map((l) => l.text)).toEqual(lines);
    expect(c.targets).toEqual([{ name: 'a2', page: 1455, pfn: 0x60ben, gpa: 0x60be000n }]);
    expect(c.heartbeats).toEqual([
      { ms: 1, pass: 1, pages: 5820, wrong: 0, lost: 0, worker: 1, cpu: 1 },
      { ms: 6, pass: 2, pages: 5820, wrong: 3, lost: 1, worker: 0, cpu: 0, hwCorruptedKb: 4 },
    ]);
    expect(c.sigbus).toEqual([{ ms: 5, kind: 'BUS_MCEERR_AR', addr: 0x7fcfe631d000n, lsb: 12, page: 1455, pfn: 0x60ben }]);
    expect(c.bye).toEqual({ passes: 10, wrong: 0, lost: 1 });
    expect(c.kernelLinesFor(0x60ben)).toEqual([
      'mce: Uncorrected hardware memory error in user-access at 60be000',
      'Memory failure: 0x60be: recovery action for dirty LRU page: Recovered',
    ]);
  });
});
