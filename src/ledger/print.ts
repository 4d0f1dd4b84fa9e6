// The human form of a journal, for the CLI (`hugetlb-ras journal PATH`).
import { hex, type JournalReplay } from './records';

function humanSize(n: number): string {
  const units: [number, string][] = [
    [2 ** 30, 'GiB'],
    [2 ** 20, 'MiB'],
    [2 ** 10, 'KiB'],
  ];
  for (const [u, name] of units) if (n >= u && n % u === 0) return `${n / u} ${name}`;
  return `${n} B`;
}

/** Quotes a string if it contains spaces, quotes or control characters (so one record stays one line). */
function text(s: string): string {
  return /^[\x21-\x7e\u00a0-\u2027\u202a-\uffff]+$/.test(s) && !s.includes('"') ? s : JSON.stringify(s);
}

/** Human form: a summary line, one line per region layout, one per lost frame, one per warning. */
export function formatJournal(replay: JournalReplay): string {
  const lines: string[] = [];
  const nRegions = replay.regions.size;
  lines.push(
    `journal: ${replay.records} record${replay.records === 1 ? '' : 's'}, ${nRegions} region${nRegions === 1 ? '' : 's'}, ` +
      `${replay.lost.length} lost frame${replay.lost.length === 1 ? '' : 's'}, ` +
      `${replay.warnings.length} warning${replay.warnings.length === 1 ? '' : 's'}`,
  );
  for (const r of replay.regions.values()) {
    const last = r.guestPhysAddr + BigInt(r.size) - 1n;
    lines.push(
      `region  ${text(r.name)}  gpa ${hex(r.guestPhysAddr)}-${hex(last)}  size ${humanSize(r.size)}  ` +
        `huge page ${humanSize(r.hugePageSize)}  file ${text(r.path)} @ offset 0x${r.offset.toString(16)}`,
    );
  }
  for (const f of replay.lost) {
    lines.push(
      `lost    ${text(f.region)}  gpa ${hex(f.guestPhysAddr)}  ${humanSize(f.size)}  offset 0x${f.offset.toString(16)}  ` +
        `at ${text(f.wallTime || '?')}  cause ${f.cause}${f.reason !== undefined ? ` (${text(f.reason)})` : ''}`,
    );
  }
  for (const f of replay.history) {
    lines.push(`history ${text(f.region)}  gpa ${hex(f.guestPhysAddr)}  ${humanSize(f.size)}  offset 0x${f.offset.toString(16)}  not applied: ${f.why}`);
  }
  for (const h of replay.handedOver) {
    lines.push(
      `handover ${text(h.region)}  gpa ${hex(h.guestPhysAddr)}  ${humanSize(h.size)}  offset 0x${h.offset.toString(16)}  ` +
        `file data current (${h.lost} lost frame${h.lost === 1 ? '' : 's'} kept lost)  at ${text(h.wallTime || '?')}  id ${text(h.id)}`,
    );
  }
  for (const p of replay.split) {
    lines.push(
      `split   ${text(p.region)}  gpa ${hex(p.guestPhysAddr)}  ${humanSize(p.size)}  offset 0x${p.offset.toString(16)}  ` +
        `private memory, not handed over: stale for a successor  at ${text(p.wallTime || '?')}`,
    );
  }
  for (const w of replay.warnings) {
    lines.push(`warning ${w.code} at byte ${w.byteOffset}: ${w.message}`);
  }
  return lines.join('\n') + '\n';
}
