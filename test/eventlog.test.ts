// The QMP-shaped event log: NDJSON that parses line by line, names the lost frame, and matches QEMU's
// MEMORY_FAILURE schema for the fields QEMU has. QEMU's schema (qapi/run-state.json, since 5.2):
//   { 'event': 'MEMORY_FAILURE', 'data': { 'recipient': 'MemoryFailureRecipient',
//     'action': 'MemoryFailureAction', 'flags': 'MemoryFailureFlags' } }
//   MemoryFailureRecipient: [ 'hypervisor', 'guest' ]; MemoryFailureAction: [ 'ignore', 'inject',
//   'fatal', 'reset' ]; MemoryFailureFlags: { 'action-required': 'bool', 'recursive': 'bool' }
// and every QMP event has "timestamp": { "seconds", "microseconds" } (wall clock).
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { PassThrough } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import { hugeFile, MiB, openEngine, SUB } from './helpers';

const GPA = 0x1_0000_0000n;
const RECIPIENTS = ['hypervisor', 'guest'];
const ACTIONS = ['ignore', 'inject', 'fatal', 'reset'];
const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});

/** Checks one parsed event against QEMU's schema: exactly its members, its enums, its types. */
function checkQmpShape(ev: Record<string, unknown>): void {
  expect(Object.keys(ev).sort()).toEqual(['data', 'event', 'timestamp']);
  expect(ev.event).toBe('MEMORY_FAILURE');
  const ts = ev.timestamp as Record<string, unknown>;
  expect(Object.keys(ts).sort()).toEqual(['microseconds', 'seconds']);
  expect(Number.isInteger(ts.seconds) && Number.isInteger(ts.microseconds)).toBe(true);
  expect(ts.microseconds as number).toBeGreaterThanOrEqual(0);
  expect(ts.microseconds as number).toBeLessThan(1e6);
  const data = ev.data as Record<string, unknown>;
  expect(RECIPIENTS).toContain(data.recipient);
  expect(ACTIONS).toContain(data.action);
  const flags = data.flags as Record<string, unknown>;
  expect(Object.keys(flags).sort()).toEqual(['action-required', 'recursive']);
  expect(typeof flags['action-required']).toBe('boolean');
  expect(typeof flags.recursive).toBe('boolean');
  // Ours: one namespaced key, nothing else beside QEMU's members.
  expect(Object.keys(data).sort()).toEqual(['action', 'flags', 'hugetlb-ras', 'recipient']);
}

describe('eventLog (QMP MEMORY_FAILURE as NDJSON)', () => {
  it('to a file: one line per lost frame, QEMU schema, the lost frame named; a frame touched again is another event', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ras-qmp-'));
    dirs.push(dir);
    const file = path.join(dir, 'events.ndjson');
    const engine = openEngine({ eventLog: file });
    const region = engine.mapRegion({ name: 'ram0', path: hugeFile('qmp'), size: 4 * MiB, guestPhysAddr: GPA });
    const before = Date.now();
    const offset = 2 * MiB + 9 * SUB;
    engine.injectPoison(region, offset + 100, { mode: 'simulate' });
    await engine.whenIdle({ timeoutMs: 10_000 });
    engine.injectPoison(region, offset + 200, { mode: 'simulate', kind: 'AO' });
    await engine.whenIdle({ timeoutMs: 10_000 });
    engine.close();
    const lines = fs.readFileSync(file, 'utf8').split('\n');
    expect(lines.pop()).toBe(''); // every line ends with a newline
    const events = lines.map((l) => JSON.parse(l) as Record<string, any>);
    expect(events).toHaveLength(2);
    for (const ev of events) checkQmpShape(ev);
    const [first, again] = events;
    expect(first.data).toMatchObject({ recipient: 'guest', action: 'inject', flags: { 'action-required': true, recursive: false } });
    expect(first.data['hugetlb-ras']).toMatchObject({
      region: 'ram0',
      'guest-physical-address': '0x' + (GPA + BigInt(offset)).toString(16),
      size: SUB,
      'page-size': '2M',
      kind: 'AR',
      outcome: 'recovered',
    });
    expect(first.data['hugetlb-ras']['duration-ns']).toBeGreaterThan(0);
    expect(first.timestamp.seconds * 1000).toBeGreaterThanOrEqual(Math.floor(before / 1000) * 1000);
    expect(first.timestamp.seconds * 1000).toBeLessThanOrEqual(Date.now());
    // Injected from this (the engine's) thread: not the guest's access, so QEMU's hypervisor case.
    expect(again.data).toMatchObject({ recipient: 'hypervisor', action: 'ignore', flags: { 'action-required': false } });
    expect(again.data['hugetlb-ras']).toMatchObject({ outcome: 'already-lost', kind: 'AO', 'guest-physical-address': '0x' + (GPA + BigInt(offset)).toString(16) });
  });

  it("to a stream the VMM names: the engine's own guarded access to a lost frame is the hypervisor's, ignored", async () => {
    const stream = new PassThrough();
    let text = '';
    stream.on('data', (d: Buffer) => (text += d.toString()));
    const engine = openEngine({ eventLog: stream });
    const region = engine.mapRegion({ name: 'ram0', path: hugeFile('qmp-s'), size: 2 * MiB, guestPhysAddr: GPA });
    engine.injectPoison(region, 3 * SUB, { mode: 'simulate' });
    await engine.whenIdle({ timeoutMs: 10_000 });
    expect(() => region.read(3 * SUB, 8)).toThrow(expect.objectContaining({ code: 'ERR_POISONED' }));
    await engine.whenIdle({ timeoutMs: 10_000 });
    engine.close();
    const events = text.trim().split('\n').map((l) => JSON.parse(l) as Record<string, any>);
    for (const ev of events) checkQmpShape(ev);
    expect(events.map((e) => [e.data.recipient, e.data.action, e.data['hugetlb-ras'].outcome])).toEqual([
      ['guest', 'inject', 'recovered'],
      ['hypervisor', 'ignore', 'already-lost'],
    ]);
  });

  it('a bad target is refused before anything opens', () => {
    expect(() => openEngine({ eventLog: 42 as unknown as string })).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG' }));
    expect(() => openEngine({ eventLog: '/nonexistent-dir-ras/x.ndjson' })).toThrow(expect.objectContaining({ code: 'ENOENT', syscall: 'stat', path: '/nonexistent-dir-ras/x.ndjson' }));
  });
});
