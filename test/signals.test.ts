import * as fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import { hugeFile, MiB, openEngine, PKG, runChild, TESTING } from './helpers';

describe('signals that are not ours behave as before', () => {
  it('a SIGBUS that is not a memory error still kills the process', () => {
    const r = runChild(`
      const { RasEngine } = ${PKG};
      const e = RasEngine.open({ reserveBytes: 0 });
      e.mapRegion({ name: 'a', path: process.env.F, size: 2 << 20 });
      process.kill(process.pid, 'SIGBUS');
      setTimeout(() => console.log('survived'), 200);
    `, { F: hugeFile('sigbus') });
    expect(r.signal).toBe('SIGBUS');
    expect(r.stdout).not.toContain('survived');
  });

  it('a real bus error (file truncated under a vCPU) kills the process as it would without us', () => {
    const r = runChild(`
      const fs = require('fs');
      const { RasEngine } = ${PKG};
      const { startVcpuLoad, fillPattern } = ${TESTING};
      const e = RasEngine.open({ reserveBytes: 0 });
      const region = e.mapRegion({ name: 'a', path: process.env.F, size: 4 << 20 });
      fillPattern(region, 1);
      fs.truncateSync(process.env.F, 0);
      startVcpuLoad(e, { region, threads: 1, seed: 1 });
      setTimeout(() => console.log('survived'), 2000);
    `, { F: hugeFile('trunc') });
    expect(r.signal).toBe('SIGBUS');
  });

  it('a SIGSEGV still kills the process, with the engine open and after it closed', () => {
    for (const close of [false, true]) {
      const r = runChild(`
        const { RasEngine } = ${PKG};
        const e = RasEngine.open({ reserveBytes: 0 });
        ${close ? 'e.close();' : ''}
        process.kill(process.pid, 'SIGSEGV');
        setTimeout(() => console.log('survived'), 200);
      `);
      expect(r.signal).toBe('SIGSEGV');
    }
  });

  it("after close the previous SIGBUS handler is back (Node's default: death)", () => {
    const r = runChild(`
      const { RasEngine } = ${PKG};
      const e = RasEngine.open({ reserveBytes: 0 });
      e.close();
      process.kill(process.pid, 'SIGBUS');
      setTimeout(() => console.log('survived'), 200);
    `);
    expect(r.signal).toBe('SIGBUS');
  });

  it('WebAssembly out-of-bounds traps (V8 uses SIGSEGV) still work with the engine open', () => {
    const engine = openEngine();
    engine.mapRegion({ name: 'a', path: hugeFile('wasm'), size: 2 * MiB });
    // (module (memory 1) (func (export "load") (param i32) (result i32) local.get 0 i32.load))
    const bytes = new Uint8Array([
      0, 97, 115, 109, 1, 0, 0, 0, 1, 6, 1, 96, 1, 127, 1, 127, 3, 2, 1, 0, 5, 3, 1, 0, 1, 7, 8, 1, 4, 108, 111, 97, 100, 0, 0, 10, 9,
      1, 7, 0, 32, 0, 40, 2, 0, 11,
    ]);
    const inst = new WebAssembly.Instance(new WebAssembly.Module(bytes));
    const load = inst.exports.load as (a: number) => number;
    expect(load(0)).toBe(0);
    expect(() => load(0x7fff_fff0)).toThrow(WebAssembly.RuntimeError);
  });

  it('a guarded read of a truncated region is an error, not a crash', () => {
    const engine = openEngine();
    const p = hugeFile('trunc-read');
    const region = engine.mapRegion({ name: 'a', path: p, size: 2 * MiB });
    region.write(0, Buffer.from('x'));
    fs.truncateSync(p, 0);
    expect(() => region.read(0, 1)).toThrow(expect.objectContaining({ code: 'ERR_MEMORY_FAULT' }));
  });
});
