// The bare-metal guest's system area (vmm/guest/proto.h) on the host: the lost list its #MC handler
// keeps in the config block must stay inside that block, whatever the number of lost frames, and
// never reach the mailboxes the vCPUs report through.
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';

// eslint-disable-next-line @typescript-eslint/no-require-imports
const vmm = require(path.resolve(__dirname, '..', 'build', 'Release', 'ras_vmm.node'));
type List = { nlost: number; listed: number; capacity: number; listEnd: number; mailboxes: number; mailboxesEnd: number; image: number; mailboxSize: number; boxes: number[][]; mailboxBytesChanged: number };
const list = (n: number): List => vmm.testing.guestLostList(n);

describe('reference VMM guest: the config block\'s lost list', () => {
  it('the list is sized from the layout: it ends at or before the first mailbox', () => {
    const r = list(0);
    expect(r.capacity).toBeGreaterThan(0);
    expect(r.listEnd).toBeLessThanOrEqual(r.mailboxes);
  });

  it('2000 lost frames: every mailbox byte unchanged, the list full, the count exact', () => {
    const r = list(2000);
    expect(r.mailboxBytesChanged).toBe(0);
    expect(r.nlost).toBe(2000); // the count goes on: a reader sees how many did not fit
    expect(r.listed).toBe(Math.min(2000, r.capacity));
  });

  it('at capacity and one past it: nothing written past the block', () => {
    const cap = list(0).capacity;
    for (const n of [cap - 1, cap, cap + 1]) {
      const r = list(n);
      expect(r.mailboxBytesChanged).toBe(0);
      expect(r.listed).toBe(Math.min(n, cap));
      expect(r.nlost).toBe(n);
    }
  });

  // Issue 21's last note: the poll handler reported through the #MC handler's mailbox, so a #MC
  // during the poll's report overwrote it before its `out`. Each reporter has its own now.
  it('every vCPU has three mailboxes (main code, #MC handler, poll handler): no two share a byte, all before the guest image', () => {
    const r = list(0);
    const all = r.boxes.flat();
    expect(r.boxes.every((b) => b.length === 3)).toBe(true);
    const sorted = [...all].sort((a, b) => a - b);
    for (let k = 1; k < sorted.length; k++) expect(sorted[k] - sorted[k - 1]).toBeGreaterThanOrEqual(r.mailboxSize);
    expect(sorted[0]).toBe(r.mailboxes);
    expect(sorted.at(-1)! + r.mailboxSize).toBe(r.mailboxesEnd);
    expect(r.mailboxesEnd).toBeLessThanOrEqual(r.image);
  });
});
