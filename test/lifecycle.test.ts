import { describe, expect, it } from 'vitest';
import { hugeFile, PKG, runChild, TESTING } from './helpers';

describe('cleanup without close()', () => {
  it('a worker thread that ends with an engine open leaves no thread, mapping or handler behind', () => {
    const r = runChild(`
      const { Worker } = require('worker_threads');
      const fs = require('fs');
      const src = "const { RasEngine } = require(process.cwd() + '/dist/src/index.js');" +
        "const e = RasEngine.open(); e.mapRegion({ name: 'w', path: process.env.F, size: 2 << 20 });" +
        "const { parentPort } = require('worker_threads'); parentPort.postMessage('mapped');" +
        "parentPort.once('message', () => process.exit(0));";  // ends only after the main thread looked
      const w = new Worker(src, { eval: true });
      w.on('message', (m) => {
        console.log('worker', m, fs.readFileSync('/proc/self/maps', 'utf8').includes(process.env.F));
        w.postMessage('done');
      });
      w.on('exit', () => {
        console.log('after exit mapped', fs.readFileSync('/proc/self/maps', 'utf8').includes(process.env.F));
        const threads = fs.readdirSync('/proc/self/task').length;
        const { RasEngine } = ${PKG};
        const e = RasEngine.open();  // the main thread can open one now
        e.close();
        console.log('threads back', fs.readdirSync('/proc/self/task').length === threads);
        process.kill(process.pid, 'SIGBUS');  // handlers restored: Node's default, death
        setTimeout(() => console.log('survived'), 300);
      });
    `, { F: hugeFile('worker') });
    expect(r.stdout).toContain('worker mapped true');
    expect(r.stdout).toContain('after exit mapped false');
    expect(r.stdout).toContain('threads back true');
    expect(r.signal).toBe('SIGBUS');
  });

  it('an engine in a worker thread refuses a second JS thread while it is open', () => {
    const r = runChild(`
      const { RasEngine } = ${PKG};
      const { Worker } = require('worker_threads');
      const e = RasEngine.open();
      const w = new Worker("try { require(process.cwd() + '/dist/src/index.js').RasEngine.open(); console.log('opened') } catch (err) { console.log(err.code) }", { eval: true });
      w.on('exit', () => { e.close(); });
    `);
    expect(r.stdout.trim()).toBe('ERR_ENGINE_IN_OTHER_THREAD');
    expect(r.status).toBe(0);
  });

  it('process.exit() with a vCPU load running exits with its code (no std::terminate)', () => {
    const r = runChild(`
      const { RasEngine } = ${PKG};
      const { fillPattern, startVcpuLoad } = ${TESTING};
      const e = RasEngine.open({ reserveBytes: 0 });
      const region = e.mapRegion({ name: 'ram', path: process.env.F, size: 2 << 20 });
      fillPattern(region, 3);
      startVcpuLoad(e, { region, threads: 2, seed: 3 });
      setTimeout(() => process.exit(0), 50);
    `, { F: hugeFile('exit-load') });
    expect(r.stderr).not.toContain('terminate');
    expect(r.signal).toBeNull();
    expect(r.status).toBe(0);
  });

  it('a worker thread that ends with a vCPU load running stops the load first', () => {
    const r = runChild(`
      const { Worker } = require('worker_threads');
      const fs = require('fs');
      const threads = fs.readdirSync('/proc/self/task').length;
      const src = "const { RasEngine } = require(process.cwd() + '/dist/src/index.js');" +
        "const { fillPattern, startVcpuLoad } = require(process.cwd() + '/dist/src/testing/index.js');" +
        "const e = RasEngine.open({ reserveBytes: 0 }); const region = e.mapRegion({ name: 'w', path: process.env.F, size: 2 << 20 });" +
        "fillPattern(region, 3); startVcpuLoad(e, { region, threads: 4, seed: 3 });" +
        "setTimeout(() => process.exit(0), 50);";
      const w = new Worker(src, { eval: true });
      w.on('exit', (code) => {
        console.log('worker exit', code, 'threads back', fs.readdirSync('/proc/self/task').length <= threads + 1);
        console.log('mapped', fs.readFileSync('/proc/self/maps', 'utf8').includes(process.env.F));
      });
    `, { F: hugeFile('worker-load') });
    expect(r.stdout).toContain('worker exit 0 threads back true');
    expect(r.stdout).toContain('mapped false');
    expect(r.status).toBe(0);
  });
});
