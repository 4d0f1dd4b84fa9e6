// Test tool: hardware poison of a huge page nobody maps any more (the old page a recovery took out of
// the guest's mapping and reads back), simulated: reads of that 4 KiB of the backing file fail with
// EIO from now on, and nothing mapped changes (no signal, as the kernel sends none for it).
import { checkUint } from '../errors';
import { native } from '../native';
import { Region } from '../region';

const t = native as unknown as { testPoisonFile(regionId: number, offset: number): void };

export function poisonBackingFile(region: Region, offset: number): void {
  Region.check(region);
  checkUint(offset, 'offset');
  t.testPoisonFile(region.id, offset);
}
