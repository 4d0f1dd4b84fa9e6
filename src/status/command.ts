// `hugetlb-ras status`: the status of a running engine (its status socket) or of a journal. Data on
// stdout, diagnostics on stderr; exit 0 (printed), 1 (could not be read), 2 (usage).
import { readJournal } from '../ledger/file';
import { version } from '../metrics/labels';
import { formatStatus } from './format';
import { journalStatus, type StatusReport } from './report';
import { queryStatusSocket } from './server';

export const STATUS_USAGE = `usage:
  hugetlb-ras status --socket PATH [--json]    a running engine (RasEngine.open({ statusSocket: PATH }))
  hugetlb-ras status --journal PATH [--json]   a journal of lost frames (read only; no engine needed)`;

export const STATUS_HELP = `hugetlb-ras status: regions, lost frames by region, stale pages, the reserve, the journal's
health, the guard and the recovery path.

${STATUS_USAGE}

  --socket PATH   ask the engine that opened this status socket (live: reserve, guard, split pages)
  --journal PATH  read a journal (what it records: regions, lost frames, stale pages, damaged records)
  --json          the report as one JSON object (addresses as hex strings), for tools
  --help, -h      this text.  --version, -V   the package's version.

exit status: 0 the status was printed; 1 it could not be read (no engine at the socket, no journal,
a journal that is not one); 2 usage.`;

interface Out {
  out: (s: string) => void;
  err: (s: string) => void;
}

export async function runStatus(args: string[], io: Out): Promise<number> {
  if (args.includes('--help') || args.includes('-h')) {
    io.out(STATUS_HELP);
    return 0;
  }
  if (args.includes('--version') || args.includes('-V')) {
    io.out(version());
    return 0;
  }
  let socket: string | undefined;
  let journal: string | undefined;
  let json = false;
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a === '--json') json = true;
    else if ((a === '--socket' || a === '--journal') && args[i + 1] !== undefined && !args[i + 1].startsWith('--')) {
      if (a === '--socket') socket = args[++i];
      else journal = args[++i];
    } else {
      io.err(`hugetlb-ras status: ${a === '--socket' || a === '--journal' ? `${a} needs a PATH` : `unknown option ${a}`}\n${STATUS_USAGE}`);
      return 2;
    }
  }
  if ((socket === undefined) === (journal === undefined)) {
    io.err(`hugetlb-ras status: give one of --socket PATH or --journal PATH\n${STATUS_USAGE}`);
    return 2;
  }
  let report: StatusReport;
  try {
    report = socket !== undefined ? ((await queryStatusSocket(socket)) as StatusReport) : journalStatus(journal!, readJournal(journal!));
  } catch (err) {
    const e = err as Error & { code?: string };
    io.err(`hugetlb-ras status: ${e.message}${e.code ? ` [${e.code}]` : ''}`);
    return 1;
  }
  if ('error' in report) {
    io.err(`hugetlb-ras status: the engine answered: ${String((report as { error: unknown }).error)}`);
    return 1;
  }
  io.out(json ? JSON.stringify(report) : formatStatus(report));
  return 0;
}
