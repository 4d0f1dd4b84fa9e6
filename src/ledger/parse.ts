// Replay of a journal's bytes: records folded into the net state (regions, lost frames not cleared by a
// later reset, warnings for a torn tail and bad records). Pure: file.ts reads and truncates.
import { RasError } from '../errors';
import { decodeLine, VersionError, type Decoded } from './format';
import { HandoverFold } from './handover';
import {
  identityChange,
  layoutDiff,
  sameLayout,
  type HistoricLoss,
  type JournalReplay,
  type JournalWarning,
  type LostFrame,
  type RegionIdentity,
  type RegionLayout,
} from './records';

function frameKey(f: { region: string; guestPhysAddr: bigint; size: number }): string {
  return `${f.region}\u0000${f.guestPhysAddr.toString(16)}\u0000${f.size}`;
}

/** Lost frames by region and 2 MiB of guest-physical address, so a reset visits only what it covers. */
const BUCKET = 21n;
function bucketKey(region: string, gpa: bigint): string {
  return `${region}\u0000${(gpa >> BUCKET).toString(16)}`;
}

interface Parsed {
  replay: JournalReplay;
  /** byte offset of the torn tail, or -1 */
  tornAt: number;
}

export function parseJournal(buf: Buffer, file: string, truncating: boolean): Parsed {
  const regions = new Map<string, RegionLayout>();
  const warnings: JournalWarning[] = [];
  // Insertion order is journal order; a reset deletes by key, from the buckets its range covers.
  const lost = new Map<string, LostFrame>();
  // Built at the first reset (a journal of losses alone never needs them: 100 000 frames replay
  // ~0.1 s faster), kept current from then on.
  let buckets: Map<string, Set<string>> | undefined;
  const addToBucket = (b: Map<string, Set<string>>, key: string, f: LostFrame): void => {
    const bk = bucketKey(f.region, f.guestPhysAddr);
    let set = b.get(bk);
    if (!set) b.set(bk, (set = new Set()));
    set.add(key);
  };
  const identities = new Map<string, RegionIdentity>();
  const history: HistoricLoss[] = [];
  let records = 0;
  let tornAt = -1;
  const handovers = new HandoverFold(regions);

  let pos = 0;
  while (pos < buf.length) {
    const nl = buf.indexOf(0x0a, pos);
    if (nl === -1) {
      tornAt = pos;
      const action = truncating ? 'truncated' : 'left in place (Journal.open truncates it)';
      warnings.push({
        code: 'ERR_JOURNAL_TORN_TAIL',
        byteOffset: pos,
        message:
          `journal ${file}: incomplete last record at byte ${pos} (${buf.length - pos} bytes, no newline; ` +
          `interrupted write), skipped and ${action}`,
      });
      break;
    }
    let decoded: Decoded | string;
    try {
      decoded = decodeLine(buf, pos, nl);
    } catch (e) {
      if (e instanceof VersionError) {
        throw new RasError(
          'ERR_JOURNAL_VERSION',
          `journal ${file}: record at byte ${pos} has ${e.message}; refusing to use a journal written by a newer version`,
          { path: file, byteOffset: pos },
        );
      }
      throw e;
    }
    if (typeof decoded === 'string') {
      warnings.push({
        code: 'ERR_JOURNAL_BAD_RECORD',
        byteOffset: pos,
        message: `journal ${file}: bad record at byte ${pos} (${nl - pos + 1} bytes): ${decoded}; skipped`,
      });
    } else if (decoded.type === 'region') {
      const l = decoded.layout;
      const old = regions.get(l.name);
      if (old && !sameLayout(old, l)) {
        warnings.push({
          code: 'ERR_JOURNAL_BAD_RECORD',
          byteOffset: pos,
          message:
            `journal ${file}: record at byte ${pos} gives region "${l.name}" a layout that conflicts with ` +
            `the one recorded first (${layoutDiff(old, l).map((d) => d.text).join('; ')}); skipped`,
        });
      } else {
        records++;
        if (!old) regions.set(l.name, l);
      }
    } else if (decoded.type === 'lost') {
      records++;
      handovers.lost(decoded.frame.region, decoded.frame.offset, decoded.frame.size);
      const key = frameKey(decoded.frame);
      if (!lost.has(key)) {
        lost.set(key, decoded.frame);
        if (buckets) addToBucket(buckets, key, decoded.frame);
      }
    } else if (decoded.type === 'identity') {
      records++;
      const old = identities.get(decoded.region);
      const why = old && identityChange(old, decoded.identity);
      if (why) {
        // The region is other memory from here on: what was lost before is history.
        handovers.voidRegion(decoded.region);
        for (const [k, f] of lost) {
          if (f.region !== decoded.region) continue;
          lost.delete(k);
          buckets?.get(bucketKey(f.region, f.guestPhysAddr))?.delete(k);
          history.push({ ...f, why });
        }
      }
      identities.set(decoded.region, decoded.identity);
    } else if (decoded.type !== 'reset') {
      records++;
      handovers.record(decoded);
    } else {
      records++;
      const r = decoded.reset;
      handovers.reset(r.region, r.guestPhysAddr, r.size);
      const end = r.guestPhysAddr + BigInt(r.size);
      if (!buckets) {
        buckets = new Map();
        for (const [k, f] of lost) addToBucket(buckets, k, f);
      }
      // A frame starts in a bucket the range covers (a reset spans whole huge pages).
      for (let b = r.guestPhysAddr >> BUCKET; b <= (end - 1n) >> BUCKET; b++) {
        const bk = `${r.region}\u0000${b.toString(16)}`;
        const set = buckets.get(bk);
        if (!set) continue;
        for (const k of set) {
          const f = lost.get(k) as LostFrame;
          if (f.guestPhysAddr >= r.guestPhysAddr && f.guestPhysAddr + BigInt(f.size) <= end) {
            lost.delete(k);
            set.delete(k);
          }
        }
        if (set.size === 0) buckets.delete(bk);
      }
    }
    pos = nl + 1;
  }
  return { replay: { regions, lost: [...lost.values()], history, identities, warnings, records, handedOver: handovers.result(), split: handovers.split() }, tornAt };
}
