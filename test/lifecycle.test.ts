import { describe, expect, it } from 'vitest';
import { hugeFile, PKG, runChild } from './helpers';

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
});
