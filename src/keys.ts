// The keys each options object of the API takes, and the check that refuses any other: a module of
// its own (no imports but the error class) so that every entry point can use it without a cycle.
import { RasError } from './errors';

/**
 * The keys each options object takes. A key not listed is refused (ERR_UNKNOWN_OPTION): a typo must
 * never mean a default (for injectPoison's `mode` that default, as root, is real MADV_HWPOISON). A new
 * option is added to its list here.
 */
export const OPTION_KEYS = {
  'RasEngine.open': ['lostPageGuard', 'reserveBytes', 'reserve', 'lazyRecovery', 'journalPath', 'kernelReadsAroundPoison', 'readThreads', 'metrics', 'eventLog', 'statusSocket'],
  metrics: ['textfileDir', 'name'],
  registerMetrics: ['registry'],
  reserve: ['2M', '1G'],
  mapRegion: ['name', 'path', 'size', 'offset', 'guestPhysAddr', 'share', 'consumers'],
  injectPoison: ['mode', 'kind', 'signal'],
  whenIdle: ['timeoutMs'],
  startVcpuLoad: ['region', 'threads', 'seed', 'writeRatio', 'window'],
  'startVcpuLoad window': ['offset', 'length'],
} satisfies Record<string, string[]>;

function distance(a: string, b: string): number {
  a = a.toLowerCase();
  b = b.toLowerCase();
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++) row[j] = Math.min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    prev = row;
  }
  return prev[b.length];
}

/** Refuses any own key of `obj` that `what`'s list (OPTION_KEYS) does not have, naming the nearest known one. */
export function checkKeys(obj: object, what: keyof typeof OPTION_KEYS, noun = 'option'): void {
  const known: readonly string[] = OPTION_KEYS[what];
  for (const key of Object.keys(obj)) {
    if (known.includes(key)) continue;
    const nearest = known.reduce((best, k) => (distance(key, k) < distance(key, best) ? k : best), known[0]);
    throw new RasError('ERR_UNKNOWN_OPTION', `${what}: unknown ${noun} "${key}" (did you mean "${nearest}"? known: ${known.join(', ')})`, {
      key,
      nearest,
      known: [...known],
    });
  }
}
