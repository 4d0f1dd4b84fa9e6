// Unit tests of the policy (src/policy.ts): pure functions, no addon, no huge pages.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  chooseGuard,
  GUARD_CODES,
  guardFromCode,
  CONSUMERS,
  hwpoisonUsable,
  ineligibleReason,
  kernelReadsAroundPoison,
  reasonCode,
  reasonFromCode,
  REASON_WORDS,
  type Consumer,
  type RefuseReason,
} from '../src/policy';

/** Every subset of the consumers, in a fixed order. */
function subsets(): Consumer[][] {
  const out: Consumer[][] = [];
  for (let mask = 0; mask < 1 << CONSUMERS.length; mask++) out.push(CONSUMERS.filter((_, i) => mask & (1 << i)));
  return out;
}

describe('policy: eligibility', () => {
  it('the consumers are vhost-user, ivshmem and vfio', () => {
    expect([...CONSUMERS]).toEqual(['vhost-user', 'ivshmem', 'vfio']);
  });

  it('a private region with no consumer on a kernel that reads around poison is eligible', () => {
    expect(ineligibleReason({ share: false, consumers: [], kernelReadsAround: true })).toBeNull();
  });

  // Expected outcome for each set of consumers of a private region (kernel reads around poison):
  // the first of vhost-user, ivshmem, vfio present names the reason.
  const byConsumers: [Consumer[], RefuseReason | null][] = [
    [[], null],
    [['vhost-user'], 'vhost-user'],
    [['ivshmem'], 'ivshmem'],
    [['vfio'], 'vfio'],
    [['vhost-user', 'ivshmem'], 'vhost-user'],
    [['ivshmem', 'vhost-user'], 'vhost-user'],
    [['vhost-user', 'vfio'], 'vhost-user'],
    [['vfio', 'ivshmem'], 'ivshmem'],
    [['ivshmem', 'vfio'], 'ivshmem'],
    [['vfio', 'ivshmem', 'vhost-user'], 'vhost-user'],
    [['vfio', 'vfio'], 'vfio'],
  ];
  for (const [consumers, reason] of byConsumers) {
    it(`consumers [${consumers.join(', ')}], share=false: ${reason ?? 'eligible'}`, () => {
      expect(ineligibleReason({ share: false, consumers, kernelReadsAround: true })).toBe(reason);
    });
  }

  it('share=true is refused as shared-mapping whatever the consumers and the kernel', () => {
    for (const consumers of subsets())
      for (const kernelReadsAround of [true, false])
        expect(ineligibleReason({ share: true, consumers, kernelReadsAround }), `consumers [${consumers}]`).toBe('shared-mapping');
  });

  it('a kernel that cannot read around poison refuses only regions that are otherwise eligible', () => {
    expect(ineligibleReason({ share: false, consumers: [], kernelReadsAround: false })).toBe('kernel-cannot-read-around-poison');
    // A consumer is the stronger reason: it would also hold on a newer kernel.
    for (const consumers of subsets().filter((s) => s.length > 0))
      expect(ineligibleReason({ share: false, consumers, kernelReadsAround: false }), `consumers [${consumers}]`).toBe(consumers.includes('vhost-user') ? 'vhost-user' : consumers.includes('ivshmem') ? 'ivshmem' : 'vfio');
  });

  it('every share/consumer/kernel combination gives exactly one outcome, eligible only in one case', () => {
    const eligible: string[] = [];
    for (const share of [false, true])
      for (const consumers of subsets())
        for (const kernelReadsAround of [false, true]) {
          const r = ineligibleReason({ share, consumers, kernelReadsAround });
          if (r === null) eligible.push(`${share}/${consumers}/${kernelReadsAround}`);
          else expect(Object.keys(REASON_WORDS)).toContain(r);
        }
    expect(eligible).toEqual(['false//true']);
  });
});

describe('policy: kernel version gate (Linux >= 6.5 reads a poisoned huge page back around the bad 4 KiB)', () => {
  const cases: [string, boolean][] = [
    ['6.5.0', true],
    ['6.5.0-1-amd64', true],
    ['6.4.16', false],
    ['6.1.0-56-amd64', false],
    ['6.12.117-amd64', true],
    ['6.10.0', true], // minor compared as a number, not as text
    ['6.9.0', true],
    ['5.15.0-91-generic', false],
    ['5.99.0', false],
    ['7.0.0', true],
    ['10.1.0', true],
    ['4.19.0', false],
    ['6', false],
    ['', false],
    ['linux', false],
  ];
  for (const [release, reads] of cases) {
    it(`${JSON.stringify(release)}: ${reads}`, () => {
      expect(kernelReadsAroundPoison(release)).toBe(reads);
    });
  }
});

describe('policy: guard choice', () => {
  it('MADV_HWPOISON counts as usable when the probe gives 0, EFAULT or ENOMEM', () => {
    expect([0, 14, 12].map(hwpoisonUsable)).toEqual([true, true, true]);
    // EPERM (not root), EINVAL (no CONFIG_MEMORY_FAILURE), ENOSYS, EACCES
    expect([1, 22, 38, 13].map(hwpoisonUsable)).toEqual([false, false, false, false]);
  });

  it("'auto' prefers a poison marker (uffd), then hwpoison where usable, then guard pages; an explicit mode is kept", () => {
    // (uffd usable, hwpoison usable) -> auto
    expect(chooseGuard('auto', true, true)).toBe('uffd');
    expect(chooseGuard('auto', true, false)).toBe('uffd');
    expect(chooseGuard('auto', false, true)).toBe('hwpoison');
    expect(chooseGuard('auto', false, false)).toBe('guard');
    for (const u of [true, false])
      for (const h of [true, false]) {
        expect(chooseGuard('guard', u, h)).toBe('guard');
        // RasEngine.open refuses an unusable explicit mode before choosing; the choice keeps what was asked.
        expect(chooseGuard('hwpoison', u, h)).toBe('hwpoison');
        expect(chooseGuard('uffd', u, h)).toBe('uffd');
      }
  });

  it('guard codes match enum hugetlb_ras_guard of the C header, both ways', () => {
    const h = fs.readFileSync(path.join(__dirname, '..', 'include', 'hugetlb_ras.h'), 'utf8');
    const code = (name: string) => Number(new RegExp(`HUGETLB_RAS_GUARD_${name} = (\\d+)`).exec(h)?.[1]);
    expect(GUARD_CODES).toEqual({ uffd: code('UFFD'), hwpoison: code('HWPOISON'), guard: code('FAULT') });
    for (const g of ['uffd', 'hwpoison', 'guard'] as const) expect(guardFromCode(GUARD_CODES[g])).toBe(g);
  });
});

describe('policy: refuse reasons across the native boundary', () => {
  const reasons = Object.keys(REASON_WORDS) as RefuseReason[];

  it('eligible is code 0; each reason has its own code and comes back from it', () => {
    expect(reasonCode(null)).toBe(0);
    const codes = reasons.map(reasonCode);
    expect(new Set(codes).size).toBe(reasons.length);
    for (const c of codes) expect(c).toBeGreaterThan(0);
    for (const r of reasons) expect(reasonFromCode(reasonCode(r))).toBe(r);
  });

  it('the numbering is the one of native/registry.h', () => {
    expect(reasons.map((r) => [r, reasonCode(r)])).toEqual([
      ['shared-mapping', 1],
      ['vhost-user', 2],
      ['ivshmem', 3],
      ['vfio', 4],
      ['kernel-cannot-read-around-poison', 5],
      ['read-back-failed', 6],
      ['no-memory', 7],
    ]);
  });

  it('an unknown code from the addon reads as read-back-failed', () => {
    expect(reasonFromCode(99)).toBe('read-back-failed');
    expect(reasonFromCode(-1)).toBe('read-back-failed');
  });

  it('every reason has words for the refused event', () => {
    for (const r of reasons) expect(REASON_WORDS[r].length).toBeGreaterThan(20);
  });
});
