// A typo is an error: unknown option keys are refused everywhere with ERR_UNKNOWN_OPTION naming the
// key and the nearest known one, before anything is created or changed. A typo in injectPoison's
// options must never fall back to 'auto' (real MADV_HWPOISON as root).
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { RasEngine } from '../src/index';
import { native } from '../src/native';
import { startVcpuLoad } from '../src/testing';
import { hugeFile, MiB, openEngine } from './helpers';

function errorOf(fn: () => unknown): Record<string, unknown> {
  try {
    fn();
  } catch (e) {
    return e as Record<string, unknown>;
  }
  throw new Error('expected an error');
}

describe('unknown option keys', () => {
  it('RasEngine.open: journalpath, lostPageGaurd', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ras-opt-'));
    const j = path.join(dir, 'ras.journal');
    expect(errorOf(() => RasEngine.open({ journalpath: j } as never))).toMatchObject({ code: 'ERR_UNKNOWN_OPTION', key: 'journalpath', nearest: 'journalPath' });
    expect(fs.existsSync(j)).toBe(false);
    expect(errorOf(() => RasEngine.open({ lostPageGaurd: 'guard' } as never))).toMatchObject({ code: 'ERR_UNKNOWN_OPTION', key: 'lostPageGaurd', nearest: 'lostPageGuard' });
    expect(errorOf(() => RasEngine.open({ reserve: { '2M': 1, '1g': 1 } } as never))).toMatchObject({ code: 'ERR_UNKNOWN_OPTION', key: '1g', nearest: '1G' });
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('mapRegion: a misspelt key maps nothing', () => {
    const e = openEngine();
    const file = hugeFile('opt');
    expect(errorOf(() => e.mapRegion({ name: 'ram', path: file, size: 2 * MiB, guestPhysAdr: 0n } as never))).toMatchObject({
      code: 'ERR_UNKNOWN_OPTION',
      key: 'guestPhysAdr',
      nearest: 'guestPhysAddr',
    });
    expect(fs.existsSync(file)).toBe(false);
    expect(e.stats().regions).toHaveLength(0);
  });

  it('injectPoison: { Mode: "simulate" } poisons nothing (never the auto fallback)', async () => {
    const e = openEngine();
    const r = e.mapRegion({ name: 'ram', path: hugeFile('opt'), size: 2 * MiB });
    const before = native.counters().captured;
    expect(errorOf(() => e.injectPoison(r, 4096, { Mode: 'simulate' } as never))).toMatchObject({ code: 'ERR_UNKNOWN_OPTION', key: 'Mode', nearest: 'mode' });
    expect(native.counters().captured).toBe(before);
    expect(r.read(4096, 4)).toEqual(Buffer.alloc(4));
    expect(e.lostPages()).toEqual([]);
  });

  it('whenIdle and startVcpuLoad', async () => {
    const e = openEngine();
    await expect(e.whenIdle({ timeout: 5 } as never)).rejects.toMatchObject({ code: 'ERR_UNKNOWN_OPTION', key: 'timeout', nearest: 'timeoutMs' });
    const r = e.mapRegion({ name: 'ram', path: hugeFile('opt'), size: 2 * MiB });
    expect(errorOf(() => startVcpuLoad(e, { region: r, threads: 1, seed: 1, writeRatoi: 0.5 } as never))).toMatchObject({
      code: 'ERR_UNKNOWN_OPTION',
      key: 'writeRatoi',
      nearest: 'writeRatio',
    });
  });
});
