// The Linux guest's console as the reference VMM reads it: every line, and what the walker
// (vmm/linux/walker.c) and the guest kernel say in them (targets, heartbeats, SIGBUS, bye, the
// memory-failure lines for a pfn).

export interface ConsoleLine { ms: number; text: string }
export interface WalkerTarget { name: string; page: number; pfn: bigint; gpa: bigint }
export interface Heartbeat {
  ms: number; pass: number; pages: number; wrong: number; lost: number; worker: number; cpu: number;
  /** The guest kernel's /proc/meminfo HardwareCorrupted (KiB) at this heartbeat: its memory-failure state. */
  hwCorruptedKb?: number;
}
export interface WalkerSigbus { ms: number; kind: 'BUS_MCEERR_AR' | 'BUS_MCEERR_AO'; addr: bigint; lsb: number; page: number; pfn: bigint }
export interface WalkerBye { passes: number; wrong: number; lost: number }

const hex = (v: bigint) => '0x' + v.toString(16);

/** The parts of a console line after the printk timestamp. */
export function body(text: string): string {
  return text.replace(/^\[\s*\d+\.\d+\]\s*/, '');
}

export class GuestConsole {
  readonly lines: ConsoleLine[] = [];
  readonly targets: WalkerTarget[] = [];
  readonly heartbeats: Heartbeat[] = [];
  readonly sigbus: WalkerSigbus[] = [];
  bye?: WalkerBye;

  add(ms: number, text: string): void {
    this.lines.push({ ms, text });
    const b = body(text);
    let m: RegExpExecArray | null;
    if ((m = /^walker: target (\w+) page=(\d+) va=\S+ pfn=(0x[0-9a-f]+) gpa=(0x[0-9a-f]+)/.exec(b)))
      this.targets.push({ name: m[1], page: Number(m[2]), pfn: BigInt(m[3]), gpa: BigInt(m[4]) });
    else if ((m = /^walker: heartbeat pass=(\d+) pages=(\d+) wrong=(\d+) lost=(\d+)(?: ms=\d+ worker=(\d+) cpu=(-?\d+))?(?: hwcorrupted_kb=(-?\d+))?/.exec(b)))
      this.heartbeats.push({
        ms, pass: Number(m[1]), pages: Number(m[2]), wrong: Number(m[3]), lost: Number(m[4]), worker: Number(m[5] ?? 0), cpu: Number(m[6] ?? 0),
        ...(m[7] !== undefined ? { hwCorruptedKb: Number(m[7]) } : {}),
      });
    else if ((m = /^walker: SIGBUS (BUS_MCEERR_A[RO]) addr=(0x[0-9a-f]+) lsb=(\d+) page=(\d+) pfn=(0x[0-9a-f]+)/.exec(b)))
      this.sigbus.push({ ms, kind: m[1] as WalkerSigbus['kind'], addr: BigInt(m[2]), lsb: Number(m[3]), page: Number(m[4]), pfn: BigInt(m[5]) });
    else if ((m = /^walker: bye passes=(\d+) wrong=(\d+) lost=(\d+)/.exec(b)))
      this.bye = { passes: Number(m[1]), wrong: Number(m[2]), lost: Number(m[3]) };
  }

  /** Lines of the guest's own log about a pfn (memory-failure handling, the machine check). */
  kernelLinesFor(pfn: bigint): string[] {
    const p = hex(pfn);
    const gpa = hex(pfn << 12n);
    return this.lines.map((l) => body(l.text)).filter((t) => t.startsWith(`Memory failure: ${p}:`) || (/^mce: /.test(t) && t.includes(gpa.slice(2))));
  }
}
