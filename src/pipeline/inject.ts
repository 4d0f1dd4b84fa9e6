// injectPoison(): real MADV_HWPOISON where it works (root, CONFIG_MEMORY_FAILURE), else simulated
// poison that makes the same situation without kernel support.
import { hwpoisonIsUsable, hwpoisonUnavailable } from '../guards';
import { invalidArg } from '../errors';
import { native } from '../native';
import { checkInjectOptions, type InjectOptions } from '../options';
import type { Region } from '../region';

export function injectPoison(region: Region, offset: number, options: InjectOptions): { mode: 'madvise' | 'simulate'; hostAddress: bigint } {
  region.checkRange(offset, 1);
  const { mode, kind, signal } = checkInjectOptions(options);
  const usable = hwpoisonIsUsable();
  const chosen = mode === 'auto' ? (usable ? 'madvise' : 'simulate') : mode;
  if (chosen === 'madvise') {
    if (!usable) throw hwpoisonUnavailable('needs root and CONFIG_MEMORY_FAILURE');
    if (kind === 'AO' || !signal) throw invalidArg('kind and signal are for simulated poison only');
    return { mode: 'madvise', hostAddress: native.injectMadvise(region.id, offset).hostAddress };
  }
  const r = native.injectSimulated(region.id, offset, kind === 'AO', signal);
  return { mode: 'simulate', hostAddress: r.hostAddress };
}
