// Replay of a journal's bytes: records folded into the net state (regions, lost frames not cleared by a
// later reset, warnings for a torn tail and bad records). Pure: file.ts reads and truncates.
import { RasError } from '../errors';
import { decodeLine, VersionError, type Decoded } from './format';
import { HandoverFold } from './handover';
import { LostSet } from './lostset';
import {
  identityChange,
  layoutDiff,
  sameLayout,
  type HistoricLoss,
  type JournalReplay,
  type JournalWarning,
  type RegionIdentity,
  type RegionLayout,
} from './records';

interface Parsed {
  replay: JournalReplay;
  /** byte offset of the torn tail, or -1 */
  tornAt: number;
}

export function parseJournal(buf: Buffer, file: string, truncating: boolean): Parsed {
  const regions = new Map<string, RegionLayout>();
  const warnings: JournalWarning[] = [];
  const lost = new LostSet(); // journal order; a reset removes what it covers
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
      lost.add(decoded.frame);
    } else if (decoded.type === 'lost-frames') {
      records++;
      for (const f of decoded.frames) {
        handovers.lost(f.region, f.offset, f.size);
        lost.add(f);
      }
    } else if (decoded.type === 'identity') {
      records++;
      const old = identities.get(decoded.region);
      const why = old && identityChange(old, decoded.identity);
      if (why) {
        // The region is other memory from here on: what was lost before is history.
        handovers.voidRegion(decoded.region);
        for (const f of lost.takeRegion(decoded.region)) history.push({ ...f, why });
      }
      identities.set(decoded.region, decoded.identity);
    } else if (decoded.type !== 'reset') {
      records++;
      handovers.record(decoded);
    } else {
      records++;
      const r = decoded.reset;
      handovers.reset(r.region, r.guestPhysAddr, r.size);
      lost.reset(r.region, r.guestPhysAddr, r.size);
    }
    pos = nl + 1;
  }
  return { replay: { regions, lost: lost.values(), history, identities, warnings, records, handedOver: handovers.result(), split: handovers.split() }, tornAt };
}
