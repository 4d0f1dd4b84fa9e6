// Label values and the package version for the metrics.
import * as fs from 'node:fs';
import * as path from 'node:path';

/** 2097152 -> '2M', 1073741824 -> '1G', 4096 -> '4K'. */
export function sizeLabel(bytes: number): string {
  if (bytes >= 1 << 30 && bytes % (1 << 30) === 0) return `${bytes / (1 << 30)}G`;
  if (bytes >= 1 << 20 && bytes % (1 << 20) === 0) return `${bytes / (1 << 20)}M`;
  if (bytes >= 1 << 10 && bytes % (1 << 10) === 0) return `${bytes / (1 << 10)}K`;
  return String(bytes);
}

let cached: string | undefined;
/** The package's version (package.json at the package root, two levels above dist/src/metrics). */
export function version(): string {
  if (cached === undefined) {
    let v = 'unknown';
    for (let d = __dirname; path.dirname(d) !== d; d = path.dirname(d)) {
      const pj = path.join(d, 'package.json');
      if (!fs.existsSync(pj)) continue;
      const j = JSON.parse(fs.readFileSync(pj, 'utf8')) as { name?: string; version?: string };
      if (j.name === 'hugetlb-ras') {
        v = j.version ?? v;
        break;
      }
    }
    cached = v;
  }
  return cached;
}
