'use strict';
// The second life of the handover cases (cases-handover.js), in its own process as a restarted VMM
// would be: opens the engine on the same journal, maps the same region, reads every byte back and
// prints what it found as one JSON line. With RESET=1 it then resets the region (a cold boot).
// Also exports newData, the bytes the first life writes after the split.
const U = require('./util');

const { MiB, SUB } = U;
const HP = 2 * MiB;

/** The bytes the guest writes after the split (not the pattern the file held before). */
function newData(offset, length) {
  const b = Buffer.alloc(length);
  for (let i = 0; i < length; i++) b[i] = ((((offset + i) * 2654435761) >>> 13) & 0xff) ^ 0x5a;
  return b;
}

async function main() {
  const { RasEngine } = U.pkg();
  const out = { events: [] };
  const engine = RasEngine.open({ journalPath: process.env.J });
  try {
    engine.on('lost', (e) => out.events.push(U.plain(e)));
    const pages = Number(process.env.PAGES);
    const region = engine.mapRegion({ name: process.env.NAME, path: process.env.F, size: pages * HP, guestPhysAddr: BigInt(process.env.GPA) });
    await engine.whenIdle({ timeoutMs: 60000 });
    out.lost = engine.lostPages().map((l) => U.plain(l));
    out.replay = U.plain(engine.stats().replay);
    // Runs of 4 KiB subpages: [state, first offset, count]; state 'new' (the data written after the
    // split), 'poison' (inaccessible), 'other' (any other bytes: stale or zero).
    out.runs = [];
    for (let off = 0; off < region.size; off += SUB) {
      let s;
      try {
        s = region.read(off, SUB).equals(newData(off, SUB)) ? 'new' : 'other';
      } catch (e) {
        s = e.code === 'ERR_POISONED' ? 'poison' : `error ${e.code}`;
      }
      const last = out.runs[out.runs.length - 1];
      if (last && last[0] === s) last[2]++;
      else out.runs.push([s, off, 1]);
    }
    if (process.env.RESET === '1') {
      out.poolBeforeReset = U.pool(HP);
      out.reset = U.plain(await engine.resetRegion(region));
      out.poolAfterReset = U.pool(HP);
      out.resetPageZero = region.read(Number(process.env.RESET_PAGE) * HP, HP).equals(Buffer.alloc(HP));
      out.lostAfterReset = engine.lostPages().length;
    }
  } finally {
    engine.close();
  }
  console.log('HANDOVER-LIFE ' + JSON.stringify(out));
}

if (require.main === module) {
  main().catch((e) => {
    console.log('HANDOVER-LIFE ' + JSON.stringify({ error: U.plain(e) }));
    process.exit(1);
  });
}

module.exports = { newData };
