// The bare-metal reference VMM's report (vmm-types.ts VmmReport), filled from the native machine's
// events: the guest's own words (hello, machine checks it took, wrong bytes, fatal exceptions),
// the machine checks the VMM injected or decided not to, vCPU stalls and errors.
import { EV_ERROR, EV_GUEST, EV_INJECTED, EV_STALL, GUEST_FATAL, GUEST_HELLO, GUEST_MCE, GUEST_WRONG, PATH_NAMES, decodeMceFlags, type NativeVmEvent } from './native';
import type { VmmReport } from './vmm-types';

/** What the events fill; the rest of VmmReport comes from the native stats at stop(). */
export type EventReport = Omit<VmmReport, 'vcpus' | 'duplicateInjections' | 'sigbus' | 'kicked'>;

export function recordEvent(report: EventReport, e: NativeVmEvent): void {
  const v = e.v;
  if (e.type === EV_GUEST) {
    switch (v[0]) {
      case GUEST_HELLO:
        report.hello.push({ cpu: e.cpu, mcgCap: v[1], cr4: v[2], banks: Number(v[3]), frames: Number(v[4]) });
        break;
      case GUEST_MCE: {
        const lsb = Number(v[4] & 0x3fn) || 12;
        report.guestMces.push({
          cpu: e.cpu,
          addr: v[1],
          gpa: v[1] & ~((1n << BigInt(Math.max(lsb, 12))) - 1n),
          status: v[2],
          mcgStatus: v[3],
          misc: v[4],
          bank: Number(v[5]),
          rip: v[6],
          skipped: v[7] === 1n,
          site: Number(v[7]),
        });
        break;
      }
      case GUEST_WRONG:
        report.wrong.push({ cpu: e.cpu, gpa: v[1], wrongBytes: Number(v[2]), got: v[3], expected: v[4] });
        break;
      case GUEST_FATAL:
        report.errors.push({ cpu: e.cpu, text: `guest exception ${v[1]} at rip 0x${v[2].toString(16)} (error ${v[3]}, cr2 0x${v[4].toString(16)})` });
        break;
      default:
        break; // FILLED, PASS, BYE: the native counters have them
    }
  } else if (e.type === EV_INJECTED) {
    const f = decodeMceFlags(v[5]);
    if (f.verdict !== 'inject' || f.piece) {
      report.mceOutcomes.push({ cpu: e.cpu, gpa: v[0], kind: e.text ?? '', verdict: f.verdict, bank: f.bank, status: v[2], mcgStatus: v[3], errno: Number(v[7]) });
      return;
    }
    report.injections.push({
      cpu: e.cpu,
      gpa: v[0],
      path: PATH_NAMES[Number(v[1])],
      status: v[2],
      mcgStatus: v[3],
      misc: v[4],
      wholeHugePage: f.wholeHugePage,
      code: Number(v[6]),
      errno: Number(v[7]),
      ar: e.text === 'AR',
      bank: f.bank,
      broadcast: f.broadcast,
      lmce: f.lmce,
    });
  } else if (e.type === EV_STALL) {
    report.stalls.push({ cpu: e.cpu, path: PATH_NAMES[Number(v[0])], address: v[1], ns: v[2], state: e.text ?? '', byHva: v[4] === 1n });
  } else if (e.type === EV_ERROR) {
    report.errors.push({ cpu: e.cpu, text: e.text ?? 'error' });
  }
}
