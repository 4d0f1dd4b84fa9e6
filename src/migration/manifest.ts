// The lost-frame manifest: what a VMM carries in its migration stream or beside its snapshot so that
// the destination's engine makes the same guest memory lost (engine.exportLost / importLost). Plain
// JSON (no bigint): addresses are '0x' + lowercase hex strings. This module only parses and checks:
// a manifest that is not exactly this shape is ERR_BAD_MANIFEST, whatever the engine maps.
import { SUBPAGE } from '../constants';
import { RasError } from '../errors';

export const MANIFEST_FORMAT = 'hugetlb-ras-lost';
export const MANIFEST_VERSION = 1;

export interface LostManifest {
  format: 'hugetlb-ras-lost';
  version: 1;
  regions: ManifestRegion[];
}

export interface ManifestRegion {
  /** Informational only: the destination matches regions by guest-physical range. */
  name: string;
  /** '0x' + lowercase hex: start of the region's guest-physical range. */
  guestPhysAddr: string;
  /** Bytes of the range. */
  size: number;
  /** 2097152 or 1073741824. */
  hugePageSize: number;
  /** Ascending by address, no duplicates, none inside another. */
  lost: ManifestFrame[];
}

export interface ManifestFrame {
  /** '0x' + lowercase hex, 4 KiB aligned (huge-page aligned for a whole huge page). */
  guestPhysAddr: string;
  /** 4096, or the region's hugePageSize for a whole lost huge page. */
  size: number;
}

/** What importLost() returns. */
export interface ImportResult {
  /** Frames newly made lost here (journaled first, cause 'imported', `lost` events after return). */
  imported: number;
  /** Frames of the manifest this engine had lost already. */
  alreadyLost: number;
}

export const HUGE_PAGE_SIZES: readonly number[] = [2 * 1024 * 1024, 1024 * 1024 * 1024];

/** A checked manifest region: addresses as bigint. */
export interface ParsedRegion {
  name: string;
  guestPhysAddr: bigint;
  size: number;
  hugePageSize: number;
  frames: { guestPhysAddr: bigint; size: number }[];
}

const HEX = /^0x[0-9a-f]{1,16}$/;
const MAX_GPA = 1n << 64n;

export function badManifest(message: string, extra: Record<string, unknown> = {}): RasError {
  return new RasError('ERR_BAD_MANIFEST', `bad lost-frame manifest: ${message}`, extra);
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && Object.getPrototypeOf(v) === Object.prototype;
}

function checkKeys(o: Record<string, unknown>, keys: readonly string[], what: string): void {
  for (const k of Object.keys(o)) if (!keys.includes(k)) throw badManifest(`${what} has an unknown key ${JSON.stringify(k)}`);
  for (const k of keys) if (!(k in o)) throw badManifest(`${what} has no ${k}`);
}

function gpa(v: unknown, what: string): bigint {
  if (typeof v !== 'string' || !HEX.test(v)) throw badManifest(`${what} must be '0x' and 1 to 16 lowercase hex digits (got ${describe(v)})`);
  return BigInt(v);
}

function positiveInt(v: unknown, what: string): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v <= 0) throw badManifest(`${what} must be a positive safe integer (got ${describe(v)})`);
  return v;
}

function describe(v: unknown): string {
  if (typeof v === 'string') return JSON.stringify(v.length > 40 ? v.slice(0, 40) + '...' : v);
  if (typeof v === 'bigint') return `${v}n`;
  if (Array.isArray(v)) return 'an array';
  return v === null ? 'null' : typeof v === 'object' ? 'an object' : String(v);
}

/**
 * Checks the whole manifest and returns it with bigint addresses; throws ERR_BAD_MANIFEST at the
 * first problem. Only the manifest itself: whether this engine maps what it names is import.ts's.
 */
export function parseManifest(m: unknown): ParsedRegion[] {
  if (!isPlainObject(m)) throw badManifest(`it must be a plain object (got ${describe(m)})`);
  checkKeys(m, ['format', 'version', 'regions'], 'the manifest');
  if (m.format !== MANIFEST_FORMAT) throw badManifest(`format must be ${JSON.stringify(MANIFEST_FORMAT)} (got ${describe(m.format)})`);
  if (m.version !== MANIFEST_VERSION) throw badManifest(`unknown version ${describe(m.version)} (this build reads version ${MANIFEST_VERSION})`);
  if (!Array.isArray(m.regions)) throw badManifest(`regions must be an array (got ${describe(m.regions)})`);
  const out: ParsedRegion[] = [];
  m.regions.forEach((r: unknown, i: number) => {
    const what = `regions[${i}]`;
    if (!isPlainObject(r)) throw badManifest(`${what} must be a plain object (got ${describe(r)})`);
    checkKeys(r, ['name', 'guestPhysAddr', 'size', 'hugePageSize', 'lost'], what);
    if (typeof r.name !== 'string') throw badManifest(`${what}.name must be a string (got ${describe(r.name)})`);
    const start = gpa(r.guestPhysAddr, `${what}.guestPhysAddr`);
    const hugePageSize = positiveInt(r.hugePageSize, `${what}.hugePageSize`);
    if (!HUGE_PAGE_SIZES.includes(hugePageSize)) throw badManifest(`${what}.hugePageSize must be 2097152 or 1073741824 (got ${hugePageSize})`);
    const size = positiveInt(r.size, `${what}.size`);
    if (size % hugePageSize !== 0) throw badManifest(`${what}.size ${size} is not a multiple of its hugePageSize ${hugePageSize}`);
    if (start % BigInt(SUBPAGE) !== 0n) throw badManifest(`${what}.guestPhysAddr ${r.guestPhysAddr} is not 4 KiB aligned`);
    if (start + BigInt(size) > MAX_GPA) throw badManifest(`${what} ends past 2^64`);
    if (!Array.isArray(r.lost)) throw badManifest(`${what}.lost must be an array (got ${describe(r.lost)})`);
    const frames: ParsedRegion['frames'] = new Array(r.lost.length);
    let next = start; // the first address the next frame may start at
    const end = start + BigInt(size);
    for (let j = 0; j < r.lost.length; j++) {
      const f: unknown = r.lost[j];
      const fw = `${what}.lost[${j}]`;
      if (!isPlainObject(f)) throw badManifest(`${fw} must be a plain object (got ${describe(f)})`);
      checkKeys(f, ['guestPhysAddr', 'size'], fw);
      const a = gpa(f.guestPhysAddr, `${fw}.guestPhysAddr`);
      const fsize = positiveInt(f.size, `${fw}.size`);
      if (fsize !== SUBPAGE && fsize !== hugePageSize) throw badManifest(`${fw}.size must be 4096 or the region's hugePageSize ${hugePageSize} (got ${fsize})`);
      if ((a - start) % BigInt(fsize) !== 0n) throw badManifest(`${fw} at ${f.guestPhysAddr} is not aligned to its size ${fsize} in the region`);
      if (a < next) throw badManifest(`${fw} at ${f.guestPhysAddr} is ${a < start ? 'before the region' : 'not after the frame before it (ascending, no duplicates, none inside another)'}`);
      if (a + BigInt(fsize) > end) throw badManifest(`${fw} at ${f.guestPhysAddr} ends past the region`);
      frames[j] = { guestPhysAddr: a, size: fsize };
      next = a + BigInt(fsize);
    }
    out.push({ name: r.name, guestPhysAddr: start, size, hugePageSize, frames });
  });
  // Regions of one guest may not overlap.
  const sorted = [...out].sort((a, b) => (a.guestPhysAddr < b.guestPhysAddr ? -1 : a.guestPhysAddr > b.guestPhysAddr ? 1 : 0));
  for (let i = 1; i < sorted.length; i++) {
    const p = sorted[i - 1];
    if (sorted[i].guestPhysAddr < p.guestPhysAddr + BigInt(p.size)) throw badManifest(`regions ${p.name} and ${sorted[i].name} overlap in guest-physical memory`);
  }
  return out;
}

export function hex(v: bigint): string {
  return '0x' + v.toString(16);
}
