// Issue 20 #8: chaining edges. A signal the engine passes on to the default action kills the
// process even when the interrupted context has that signal blocked (the re-raised one used to stay
// blocked when the handler returned: the thread went on, or faulted again, instead of dying).
import { describe, expect, it } from 'vitest';
import { PKG, runChild } from './helpers';

describe('chaining edges', () => {
  it('a memory error outside the regions, taken while the thread blocked SIGBUS (sigsuspend), kills with SIGBUS', () => {
    const r = runChild(`
      const native = require('bindings')('hugetlb_ras');
      const { RasEngine } = ${PKG};
      RasEngine.open({ reserveBytes: 0 });
      native.testSuspendedFault(0x1000n);   // not guest RAM: the default action, death
      console.log('survived');
    `);
    expect(r.stdout).not.toContain('survived');
    expect(r.signal).toBe('SIGBUS');
  });
});
