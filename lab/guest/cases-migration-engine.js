'use strict';
// Lab case for the engine side of a migration (issue 22 #2) on a 1 GiB page, which the host tests
// cannot have: engine.importLost() at a destination makes the source's lost frames lost here. The
// 1 GiB page holds healthy data (nothing is poisoned on a destination): it is split with every byte
// kept, >= 99% of it stays on 2 MiB THP, and each imported 4 KiB frame gets the userfaultfd poison
// marker, so a vCPU's access to it is a machine check for exactly that frame (a raw access by a
// native thread, not the engine's guarded read). A later manifest adds a frame to the split page in
// place. exportLost() gives back the same frames.
// Registered from cases.js: require('./cases-migration-engine').register(def, helpers).
const U = require('./util');

const { GiB, SUB, hex } = U;
const SEED = 0x1e22;

function manifest(gpa0, offsets) {
  return {
    format: 'hugetlb-ras-lost',
    version: 1,
    regions: [{ name: 'source-ram', guestPhysAddr: hex(gpa0), size: GiB, hugePageSize: GiB, lost: offsets.map((o) => ({ guestPhysAddr: hex(gpa0 + BigInt(o)), size: SUB })) }],
  };
}

function register(def, helpers) {
  def({
    id: 'e1',
    name: 'importLost on a 1 GiB page: split onto THP (>= 99%) with every byte kept, the imported frames guarded (a vCPU gets a machine check there, nowhere else)',
    kernels: ['6.12'],
    timeout: 420,
    async run(t) {
      const p1 = U.pool(GiB);
      t.must('a free 1 GiB huge page (hugepagesz=1G hugepages=N)', p1 && p1.free >= 1, p1);
      const { engine, ev } = t.openEngine({});
      t.note('guard', engine.lostPageGuard);
      t.eq('the engine guards with userfaultfd poison markers (6.12)', engine.lostPageGuard, 'uffd');
      const gpa0 = 0x80_0000_0000n;
      const region = t.mapRegion(engine, { name: 'e1', path: t.hugePath(GiB, 'e1'), size: GiB, guestPhysAddr: gpa0, pageSize: GiB });
      U.testing().fillPattern(region, SEED);
      const first = [0x1234_5000, 0x1234_6000, 0x3fff_f000];
      const res = engine.importLost(JSON.parse(JSON.stringify(manifest(gpa0, first))));
      t.eq('importLost: 3 frames imported', res, { imported: 3, alreadyLost: 0 });
      const lost = t.lostOf(engine, region);
      t.eq('lostPages: the 3 frames, 4 KiB each, cause imported', lost.map((l) => [l.offset, l.size, l.cause]), first.map((o) => [o, SUB, 'imported']));
      const share = engine.hugeMappedShare(region, 0);
      t.note('hugeMappedShare after the import', share);
      t.check('>= 99% of the 1 GiB page on 2 MiB THP after the split', share >= 0.99, { share });
      // Every other byte as it was: nothing was poisoned, nothing lost but the imported frames.
      helpers.checkPattern(t, region, SEED, first);
      for (const o of first) U.expectPoisonError(t, region, o, gpa0 + BigInt(o));
      const ra = region.readAvailable(0x1230_0000, 0x100_0000);
      t.eq('readAvailable lists the imported frames of its range', ra.lostOffsets, [0x1234_5000, 0x1234_6000]);
      const marker = U.pagemapEntry(region.address + BigInt(first[0]));
      t.eq('the imported frame is a poison marker (not present, a swap-type entry)', { present: marker.present, swapped: marker.swapped }, { present: false, swapped: true });
      // A vCPU's raw access (native load threads, not the engine's guarded read): a machine check
      // for exactly the imported frames of its window, and the pattern everywhere else.
      const load = U.testing().startVcpuLoad(engine, { region, threads: 2, seed: SEED, writeRatio: 0, window: { offset: 0x1234_0000, length: 0x1_0000 } });
      await U.sleep(1000);
      const rep = await load.stop();
      t.note('vCPU load', { accesses: rep.accesses, wrongBytes: rep.wrongBytes, mce: rep.mceReports.length });
      t.eq('vCPU load: no wrong byte', rep.wrongBytes, 0);
      t.check('vCPU load: machine checks reported', rep.mceReports.length > 0, rep.mceReports.length);
      const at = [...new Set(rep.mceReports.map((m) => m.offset - (m.offset % SUB)))].sort((a, b) => a - b);
      t.check('vCPU load: machine checks only at the imported frames', at.every((o) => o === 0x1234_5000 || o === 0x1234_6000), at);
      // A later manifest (frames lost during the migration): one more frame, guarded in place.
      const second = [...first.slice(0, 2), 0x2000_0000, first[2]];
      const res2 = engine.importLost(manifest(gpa0, second));
      t.eq('a later manifest adds only the new frame', res2, { imported: 1, alreadyLost: 3 });
      helpers.checkPattern(t, region, SEED, second);
      const share2 = engine.hugeMappedShare(region, 0);
      t.check('>= 99% still on THP after the in-place guard', share2 >= 0.99, { share2 });
      await t.idle(engine);
      t.eq("4 'lost' events, cause imported", ev.lost.map((e) => [e.offset, e.cause]), [...first, 0x2000_0000].map((o) => [o, 'imported']));
      t.eq('no recovered or refused event (nothing was poisoned)', ev.recovered.length + ev.refused.length, 0);
      const out = engine.exportLost();
      t.eq('exportLost gives back the 4 frames', out.regions[0].lost, second.map((o) => ({ guestPhysAddr: hex(gpa0 + BigInt(o)), size: SUB })));
      helpers.checkAlive(t);
    },
  });
}

module.exports = { register };
