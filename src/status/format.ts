// `hugetlb-ras status` as a table for people (--json gives the StatusReport itself).
import type { StatusReport } from './report';

function table(head: string[], rows: (string | number)[][]): string {
  const cells = [head, ...rows.map((r) => r.map(String))];
  const widths = head.map((_, i) => Math.max(...cells.map((r) => r[i].length)));
  return cells.map((r) => r.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ').trimEnd()).join('\n');
}

const dash = (v: number | undefined) => (v === undefined ? '-' : v);

export function formatStatus(s: StatusReport): string {
  const out: string[] = [];
  out.push(s.source === 'engine' ? `hugetlb-ras ${s.version}: engine of process ${s.pid}` : `hugetlb-ras ${s.version}: journal ${s.journal?.path} (no engine asked: live state absent)`);
  if (s.guard) out.push(`guard: ${s.guard}   recovery path: ${s.recoveryPath}${s.lazyUnavailable ? ` (not lazy: ${s.lazyUnavailable})` : ''}`);
  if (s.reserve) out.push(`reserve: ${s.reserve.bytes} of ${s.reserve.targetBytes} bytes held`);
  if (s.journal) {
    const j = s.journal;
    const parts = [
      j.healthy ? 'healthy' : 'NOT HEALTHY',
      ...(j.records !== undefined ? [`${j.records} records`] : []),
      ...(j.failedWrites !== undefined ? [`${j.failedWrites} failed writes`, `${j.notDurable} losses not yet durable`] : []),
    ];
    out.push(`journal: ${j.path}: ${parts.join(', ')}`);
    for (const w of j.warnings ?? []) out.push(`  warning: ${w}`);
  } else if (s.source === 'engine') out.push('journal: none (losses are not kept across a restart)');
  out.push('');
  out.push(
    s.regions.length === 0
      ? 'no regions'
      : table(
          ['REGION', 'PAGE', 'HUGE PAGES', 'SPLIT', 'LOST WHOLE', 'LOST FRAMES', 'LOST BYTES'],
          s.regions.map((r) => [r.name, r.pageSize, dash(r.hugePages), dash(r.splitHugePages), dash(r.lostHugePages), r.lostFrames, r.lostBytes]),
        ),
  );
  out.push('');
  out.push(s.stalePages.length === 0 ? 'stale pages: none' : table(['STALE IN REGION', 'GUEST PHYSICAL', 'SIZE'], s.stalePages.map((p) => [p.region, p.guestPhysAddr, p.size])));
  return out.join('\n');
}
