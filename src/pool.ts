// What mapping a region says when the huge page pool is too small: ENOMEM from hugetlbfs is the pool.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { RasError } from './errors';

/** ENOMEM from mapping hugetlbfs is the huge page pool: say so, with the numbers and the way out. */
export function hugePagePoolError(err: unknown, name: string, file: string, size: number): unknown {
  if (!(err instanceof RasError) || err.code !== 'ENOMEM') return err;
  let huge: number;
  try {
    huge = fs.statfsSync(path.dirname(path.resolve(file))).bsize;
  } catch {
    return err;
  }
  const kb = `${huge / 1024}kB`;
  const sys = `/sys/kernel/mm/hugepages/hugepages-${kb}`;
  const read = (f: string): number | undefined => {
    try {
      return Number(fs.readFileSync(`${sys}/${f}`, 'utf8'));
    } catch {
      return undefined;
    }
  };
  const free = read('free_hugepages');
  const total = read('nr_hugepages');
  const needed = size / huge;
  const human = huge >= 2 ** 30 ? `${huge / 2 ** 30} GiB` : `${huge / 2 ** 20} MiB`;
  const env = huge >= 2 ** 30 ? 'HUGETLB_RAS_PAGES_1G' : 'HUGETLB_RAS_PAGES_2M';
  return new RasError(
    'ENOMEM',
    `region ${name}: not enough huge pages of ${human} to map ${file}: it needs ${needed}, the pool has ` +
      `HugePages_Free ${free ?? '?'} of nr_hugepages ${total ?? '?'} (${sys}). Raise the pool as root: ` +
      `${env}=${(total ?? 0) + needed} bash scripts/setup-hugetlbfs.sh (or echo N > ${sys}/nr_hugepages), or map less`,
    {
      errno: (err as { errno?: number }).errno,
      syscall: (err as { syscall?: string }).syscall,
      hugePageSize: huge,
      hugePagesNeeded: needed,
      hugePagesFree: free,
      cause: err,
    },
  );
}
