// Issue 19: lazy recoveries while other threads pin pages (an io_uring fixed buffer, O_DIRECT writes
// from guest RAM), lock and unlock memory (mlock, mlock2 MLOCK_ONFAULT) and touch pieces (vCPU load
// threads), over many iterations. Each iteration is bounded; the whole runs in a child with a
// timeout (a hang fails it). No wrong byte, no invented and no forgotten loss.
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { native } from '../src/native';
import { hugeFile, PKG, runChild, TESTING } from './helpers';

const lazy = native.lazyInfo();

describe.skipIf(!lazy.available)('lazy recovery under pins, locks and touches', () => {
  it('many iterations: every byte right, exactly the injected losses, each iteration bounded', { timeout: 120_000 }, () => {
    const res = runChild(`
      const { RasEngine } = ${PKG};
      const { fillPattern, verifyPattern, startVcpuLoad } = ${TESTING};
      const { native } = require('./dist/src/native.js');
      const MiB = 1 << 20, SUB = 4096, PIECE = 65536, N = Number(process.env.N);
      const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
      const until = async (f, ms) => { const end = Date.now() + ms; while (!f()) { if (Date.now() > end) throw new Error('bounded wait exceeded'); await sleep(2); } };
      (async () => {
        const e = RasEngine.open({ reserveBytes: 'auto', lostPageGuard: 'uffd' });
        const r = e.mapRegion({ name: 'st', path: process.env.F, size: 8 * MiB });
        const out = { iterations: 0, wrong: 0, loadWrong: 0, badLost: [], badUnreadable: [], pinned: 0, directWrites: 0, inPlace0: e.stats().recovery.inPlaceFinishes };
        for (let i = 0; i < N; i++) {
          const seed = 100 + i;
          fillPattern(r, seed);
          await until(() => e.stats().reserveBytes >= e.stats().reserveTarget, 20000);
          const page = i % 4, base = page * 2 * MiB;
          const lostSub = (i * 13 + 1) % 512, lostAt = base + lostSub * SUB, lostPiece = Math.floor(lostSub / 16);
          const pieces = [3, 11, 20, 27, 30].map((p) => (p + i) % 32).filter((p) => p !== lostPiece);
          const got = [];
          const on = (ev) => got.push(ev);
          e.on('recovered', on);
          const load = startVcpuLoad(e, { region: r, threads: 2, seed, writeRatio: 0.25 });
          native.testHoldBackHalves(true);
          let ring = -1, direct = null;
          try {
            e.injectPoison(r, lostAt, { mode: 'simulate', kind: 'AR' });
            await until(() => native.pageStates(r.id)[page] === native.constants.pageState.split, 20000);
            const at = (p) => base + p * PIECE;
            r.read(at(pieces[0]), 16); // touched: filled by the fault thread
            ring = native.testPinIoUring(r.address + BigInt(at(pieces[0])), PIECE);
            if (ring >= 0) out.pinned++;
            r.read(at(pieces[1]), 16);
            direct = native.testStartDirectWrites(process.env.D, r.address + BigInt(at(pieces[1])), PIECE);
            if (typeof direct !== 'bigint') direct = null;
            native.testMlock(r.address + BigInt(at(pieces[2])), PIECE, i % 2 === 1); // populates the piece (on-fault: not)
            if (i % 3 === 0) native.testHoldBackHalves(false); // the back half races the rest
            native.testMlock(r.address + BigInt(at(pieces[3])), 2 * PIECE, false);
            await sleep(i % 4);
            native.testMunlock(r.address + BigInt(at(pieces[2])), PIECE);
            native.testHoldBackHalves(false);
            await until(() => got.length > 0, 20000);
            await e.whenIdle({ timeoutMs: 20000 });
          } finally {
            native.testHoldBackHalves(false);
            if (direct !== null) out.directWrites += native.testStopDirectWrites(direct).writes;
            if (ring >= 0) native.testUnpin(ring);
            native.testMunlock(r.address, 8 * MiB);
            e.off('recovered', on);
          }
          const rep = await load.stop();
          out.loadWrong += rep.wrongBytes;
          const check = verifyPattern(r, seed);
          out.wrong += check.wrongBytes;
          const lost = e.lostPages().map((p) => p.offset);
          if (lost.length !== 1 || lost[0] !== lostAt) out.badLost.push({ i, lost, want: lostAt });
          if (check.unreadableOffsets.length !== 1 || check.unreadableOffsets[0] !== lostAt) out.badUnreadable.push({ i, got: check.unreadableOffsets, want: lostAt });
          await e.resetRegion(r);
          out.iterations++;
        }
        out.inPlace = e.stats().recovery.inPlaceFinishes - out.inPlace0;
        console.log('RESULT ' + JSON.stringify(out));
        e.close();
      })().catch((err) => { console.log('RESULT ' + JSON.stringify({ error: String(err && err.stack || err) })); process.exit(3); });
    `, { F: hugeFile('stress'), D: path.join(os.tmpdir(), `ras-direct-${process.pid}`), N: '12' });
    const line = res.stdout.split('\n').find((l) => l.startsWith('RESULT '));
    expect(line, `status ${res.status} signal ${res.signal}\n${res.stderr}`).toBeDefined();
    const out = JSON.parse((line as string).slice(7));
    expect(out.error, out.error).toBeUndefined();
    expect(out.iterations).toBe(12);
    expect(out.badLost).toEqual([]);
    expect(out.badUnreadable).toEqual([]);
    expect(out.wrong).toBe(0);
    expect(out.loadWrong).toBe(0);
    expect(out.pinned).toBe(12);
    expect(out.directWrites).toBeGreaterThan(0);
    expect(out.inPlace).toBeGreaterThan(0); // the pinned pieces stayed where they were
    expect(res.status).toBe(0);
  });
});
