// A birth time the file system does not have (0), or a change time standing in for it where statx is
// unavailable, never makes the same file look created again: the losses stay losses.
import { describe, expect, it } from 'vitest';
import { identityChange, sameIdentity } from '../src/ledger/records';

const id = (birthMs: number) => ({ boot: 'b', dev: 1, ino: 2, birthMs });

describe('region identity and birth times', () => {
  it('an unknown birth time on either side compares dev and inode only', () => {
    expect(identityChange(id(1234), id(0))).toBeUndefined();
    expect(identityChange(id(0), id(1234))).toBeUndefined();
    expect(sameIdentity(id(0), id(1234))).toBe(true);
    expect(identityChange(id(1234), id(5678))).toMatch(/created again/);
    expect(identityChange(id(0), { ...id(0), ino: 3 })).toMatch(/created again/);
  });
});
