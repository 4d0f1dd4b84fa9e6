'use strict';
// Test context and helpers for the lab cases (plain CommonJS, runs inside the guest).
// Cases use the package's public API only; the helpers here read kernel state
// (/proc, /sys, debugfs) to check what the engine reports against what the kernel did.

const fs = require('fs');
const path = require('path');

const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;
const SUB = 4096;

const HUGE_DIRS = {
  [2 * MiB]: process.env.LAB_HUGE2M || '/mnt/huge2m',
  [GiB]: process.env.LAB_HUGE1G || '/mnt/huge1g',
};

let pkgCache = null;
function pkg() {
  if (!pkgCache) pkgCache = require(process.env.LAB_PKG || path.resolve(__dirname, '..', '..'));
  return pkgCache;
}

// The test tools (fillPattern, verifyPattern, startVcpuLoad): `hugetlb-ras/testing`, not the root.
let testingCache = null;
function testing() {
  if (!testingCache) testingCache = require(path.join(process.env.LAB_PKG || path.resolve(__dirname, '..', '..'), 'dist', 'src', 'testing', 'index.js'));
  return testingCache;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function hex(v) {
  if (typeof v === 'bigint') return '0x' + v.toString(16);
  if (typeof v === 'number' && Number.isInteger(v) && v >= 0) return '0x' + v.toString(16);
  return String(v);
}

// JSON-safe copy: bigint -> "0x..", Region -> its name, Buffers summarised, cycles cut.
function plain(v, depth = 0) {
  if (depth > 6) return '...';
  if (typeof v === 'bigint') return '0x' + v.toString(16);
  if (v === undefined) return null;
  if (v === null || typeof v !== 'object') return v;
  if (Buffer.isBuffer(v)) return `<Buffer ${v.length} bytes>`;
  if (v instanceof Error) return { error: v.message, code: v.code, errno: v.errno, syscall: v.syscall };
  if (Array.isArray(v)) {
    const a = v.slice(0, 40).map((x) => plain(x, depth + 1));
    if (v.length > 40) a.push(`... ${v.length - 40} more`);
    return a;
  }
  if (isRegion(v) && depth > 0) return `Region(${v.name})`;
  const o = {};
  for (const k of Object.keys(v)) o[k] = plain(v[k], depth + 1);
  return o;
}

function isRegion(v) {
  return v && typeof v === 'object' && typeof v.name === 'string' && typeof v.address === 'bigint' && 'hugePageSize' in v;
}

function regionName(r) {
  if (r == null) return r;
  if (typeof r === 'string') return r;
  return r.name;
}

// Deep equality for checks: whole arrays and buffers (plain() shortens them for the log), object
// keys in any order, bigints by value.
function canon(v) {
  if (typeof v === 'bigint') return '0x' + v.toString(16);
  if (v === undefined) return null;
  if (v === null || typeof v !== 'object') return v;
  if (Buffer.isBuffer(v)) return `<Buffer ${v.toString('hex')}>`;
  if (v instanceof Error) return { code: v.code, errno: v.errno, error: v.message, syscall: v.syscall };
  if (Array.isArray(v)) return v.map(canon);
  const o = {};
  for (const k of Object.keys(v).sort()) o[k] = canon(v[k]);
  return o;
}

function same(a, b) {
  return JSON.stringify(canon(a)) === JSON.stringify(canon(b));
}

function big(v) {
  return typeof v === 'bigint' ? v : BigInt(v);
}

// 4 KiB frame of an address (bigint).
function frame(v) {
  return big(v) & ~0xfffn;
}

// ----- kernel state -----

function readInt(p) {
  return parseInt(fs.readFileSync(p, 'utf8').trim(), 10);
}

function pool(pageSize) {
  const d = `/sys/kernel/mm/hugepages/hugepages-${pageSize / KiB}kB`;
  if (!fs.existsSync(d)) return null;
  return {
    total: readInt(`${d}/nr_hugepages`),
    free: readInt(`${d}/free_hugepages`),
    resv: readInt(`${d}/resv_hugepages`),
    surplus: readInt(`${d}/surplus_hugepages`),
  };
}

function meminfo() {
  const out = {};
  for (const line of fs.readFileSync('/proc/meminfo', 'utf8').split('\n')) {
    const m = /^([\w()]+):\s+(\d+)/.exec(line);
    if (m) out[m[1]] = parseInt(m[2], 10);
  }
  return out;
}

// PFN backing a virtual address of this process (root only), or null when not present.
function pagemapPfn(addr) {
  const e = pagemapEntry(addr);
  return e && e.present && e.pfn ? e.pfn : null;
}

// Raw /proc/self/pagemap entry of a virtual address: present (bit 63), swapped (bit 62: a
// swap-type entry; a hwpoisoned anonymous page shows as one), pfn when present.
function pagemapEntry(addr) {
  const fd = fs.openSync('/proc/self/pagemap', 'r');
  try {
    const b = Buffer.alloc(8);
    const pos = Number(big(addr) / 4096n) * 8;
    if (fs.readSync(fd, b, 0, 8, pos) !== 8) return null;
    const e = b.readBigUInt64LE(0);
    return {
      raw: '0x' + e.toString(16),
      present: !!(e & (1n << 63n)),
      swapped: !!(e & (1n << 62n)),
      pfn: e & (1n << 63n) ? e & ((1n << 55n) - 1n) : null,
    };
  } finally {
    fs.closeSync(fd);
  }
}

const CORRUPT_PFN = '/sys/kernel/debug/hwpoison/corrupt-pfn';

// Poison a physical frame through hwpoison_inject's debugfs file. Returns {ok, error}.
function corruptPfn(pfn) {
  try {
    fs.writeFileSync(CORRUPT_PFN, '0x' + big(pfn).toString(16) + '\n');
    return { ok: true };
  } catch (e) {
    return { ok: false, error: e.code || e.message };
  }
}

// pread from a file (a hugetlbfs file here): {n, errno, data}.
function pread(file, off, len) {
  const fd = fs.openSync(file, 'r');
  try {
    const b = Buffer.alloc(len);
    try {
      const n = fs.readSync(fd, b, 0, len, off);
      return { n, data: b.subarray(0, n) };
    } catch (e) {
      return { n: -1, errno: e.code };
    }
  } finally {
    fs.closeSync(fd);
  }
}

// VMAs of this process that overlap [start, end): [{start, end, path, kernelPageSize}]
function vmas(start, end) {
  const s = big(start);
  const e = big(end);
  const out = [];
  let cur = null;
  for (const line of fs.readFileSync('/proc/self/smaps', 'utf8').split('\n')) {
    const m = /^([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ \S+\s*(.*)$/.exec(line);
    if (m) {
      const a = BigInt('0x' + m[1]);
      const b = BigInt('0x' + m[2]);
      cur = a < e && b > s ? { start: a, end: b, perms: m[3], path: m[4].trim(), kernelPageSize: null } : null;
      if (cur) out.push(cur);
      continue;
    }
    const k = /^KernelPageSize:\s+(\d+) kB/.exec(line);
    if (k && cur) cur.kernelPageSize = parseInt(k[1], 10) * KiB;
  }
  return out;
}

// ----- the test context -----

class CaseFailure extends Error {}

class T {
  constructor(id, name, resultFile) {
    this.id = id;
    this.name = name;
    this.resultFile = resultFile;
    this.checks = [];
    this.notes = {};
    this.errors = [];
    this.t0 = Date.now();
    this.cleanups = [];
    this.status = 'running';
    this.flush();
  }

  flush() {
    if (!this.resultFile) return;
    const failed = this.checks.filter((c) => !c.ok).length;
    const r = {
      id: this.id,
      name: this.name,
      status: this.status,
      ms: Date.now() - this.t0,
      passedChecks: this.checks.length - failed,
      failedChecks: failed,
      checks: this.checks,
      errors: this.errors,
      notes: plain(this.notes),
    };
    try {
      fs.writeFileSync(this.resultFile + '.tmp', JSON.stringify(r));
      fs.renameSync(this.resultFile + '.tmp', this.resultFile);
    } catch (e) {
      console.error('lab: cannot write result file', e.message);
    }
  }

  log(...a) {
    console.log(`[case ${this.id}]`, ...a);
  }

  // Records a check; `info` (expected/actual/...) is kept for failed checks.
  check(name, ok, info) {
    const c = { name, ok: !!ok };
    if (!ok && info !== undefined) c.info = plain(info);
    this.checks.push(c);
    this.log(`${ok ? 'ok  ' : 'FAIL'} ${name}${!ok && info !== undefined ? ' ' + JSON.stringify(plain(info)) : ''}`);
    this.flush();
    return !!ok;
  }

  eq(name, actual, expected) {
    return this.check(name, same(actual, expected), { expected, actual });
  }

  // A failed precondition: stop the case here.
  must(name, ok, info) {
    if (!this.check(name, ok, info)) throw new CaseFailure(`precondition failed: ${name}`);
  }

  note(k, v) {
    this.notes[k] = plain(v);
    this.flush();
  }

  error(e) {
    const msg = e instanceof CaseFailure ? e.message : (e && e.stack) || String(e);
    this.errors.push(msg);
    this.log('ERROR', msg);
    this.flush();
  }

  onCleanup(fn) {
    this.cleanups.unshift(fn);
  }

  async cleanup() {
    for (const fn of this.cleanups) {
      try {
        await fn();
      } catch (e) {
        this.log('cleanup:', e.message);
      }
    }
    this.cleanups = [];
  }

  finish() {
    this.status = this.errors.length === 0 && this.checks.every((c) => c.ok) && this.checks.length > 0 ? 'pass' : 'fail';
    this.flush();
    return this.status;
  }

  // Await a promise with a time limit; a timeout is a failed check and stops the case.
  async within(name, promise, ms) {
    let timer;
    const to = new Promise((_, rej) => {
      timer = setTimeout(() => rej(new CaseFailure(`${name}: no answer within ${ms} ms`)), ms);
    });
    try {
      return await Promise.race([promise, to]);
    } catch (e) {
      if (e instanceof CaseFailure) this.check(`${name} completes within ${ms} ms`, false);
      throw e;
    } finally {
      clearTimeout(timer);
    }
  }

  // Wait until pred() is truthy (polling), at most ms. Returns the last value.
  async waitFor(pred, ms, every = 50) {
    const end = Date.now() + ms;
    let v = pred();
    while (!v && Date.now() < end) {
      await sleep(every);
      v = pred();
    }
    return v;
  }

  hugePath(pageSize, name) {
    const dir = HUGE_DIRS[pageSize];
    const p = path.join(dir, `lab-${this.id}-${name}`);
    try {
      fs.unlinkSync(p);
    } catch {
      /* not there */
    }
    this.onCleanup(() => {
      try {
        fs.unlinkSync(p);
      } catch {
        /* gone */
      }
    });
    return p;
  }

  // Open an engine and record every event it emits.
  openEngine(opts = {}) {
    const { RasEngine } = pkg();
    const engine = RasEngine.open(opts);
    const ev = new Events(engine);
    this.onCleanup(() => engine.close());
    this.engine = engine;
    this.ev = ev;
    return { engine, ev };
  }

  // `spec.pageSize` is the case's own expectation (checked below), not an option of mapRegion: an
  // unknown key is refused there (ERR_UNKNOWN_OPTION).
  mapRegion(engine, spec) {
    const { pageSize: _expected, ...regionSpec } = spec;
    const region = engine.mapRegion(regionSpec);
    this.must(`mapRegion ${spec.name}`, isRegion(region), { got: plain(region) });
    this.eq(`${spec.name}: hugePageSize`, region.hugePageSize, spec.pageSize || 2 * MiB);
    this.eq(`${spec.name}: size`, region.size, spec.size);
    this.eq(`${spec.name}: guestPhysAddr`, region.guestPhysAddr, big(spec.guestPhysAddr || 0n));
    return region;
  }

  // Real MADV_HWPOISON through the engine. Fails loudly when madvise is unavailable.
  // { allowBusy: true }: with other threads touching the huge page, the kernel may find it
  // "still referenced" and report the recovery action as failed (madvise -> EBUSY) although the
  // page is poisoned all the same. Then the poison counts as landed when the kernel refuses to
  // read that subpage back (pread -> EIO, Linux >= 6.5).
  async inject(engine, region, offset, opts = {}) {
    let r;
    try {
      r = await engine.injectPoison(region, offset, { mode: 'madvise' });
    } catch (e) {
      if (opts.allowBusy && e && e.code === 'EBUSY') {
        const rd = pread(region.path, region.fileOffset ? region.fileOffset + offset : offset, SUB);
        this.note(`injectPoison(${region.name}, ${hex(offset)})`, { threw: plain(e), preadAfter: rd.errno || rd.n });
        this.check(`injectPoison(${region.name}, ${hex(offset)}): EBUSY from madvise, but the poison landed (pread EIO)`, rd.errno === 'EIO', {
          error: plain(e),
          pread: rd.errno || rd.n,
        });
        if (rd.errno === 'EIO') return { mode: 'madvise', hostAddress: region.address + BigInt(offset), busy: true };
      }
      this.check(`injectPoison(${region.name}, ${hex(offset)}, madvise) works`, false, {
        error: plain(e),
        hint: 'MADV_HWPOISON must work inside the lab (root, CONFIG_MEMORY_FAILURE)',
      });
      throw new CaseFailure(`MADV_HWPOISON unavailable in the lab: ${e && e.message}`);
    }
    this.eq(`injectPoison(${region.name}, ${hex(offset)}): mode`, r && r.mode, 'madvise');
    this.eq(`injectPoison(${region.name}, ${hex(offset)}): hostAddress`, r && r.hostAddress, region.address + BigInt(offset));
    return r;
  }

  // whenIdle() must resolve only after the events of every captured report were emitted.
  // With { settle: ms } (only where nothing else runs) wait that long afterwards and check
  // that no event arrived late.
  async idle(engine, ms = 120000, { settle = 0 } = {}) {
    await this.within('engine.whenIdle()', engine.whenIdle(), ms);
    if (settle > 0 && this.ev) {
      const n = this.ev.all.length;
      await sleep(settle);
      const late = this.ev.all.slice(n);
      this.check(`no event emitted after whenIdle() resolved (waited ${settle} ms)`, late.length === 0, {
        late: late.map((x) => ({ name: x.name, event: x.e })),
      });
    }
  }

  lostOf(engine, region) {
    return engine
      .lostPages()
      .filter((l) => regionName(l.region) === region.name)
      .sort((a, b) => a.offset - b.offset);
  }
}

class Events {
  constructor(engine) {
    this.all = [];
    for (const name of ['poison', 'recovered', 'refused', 'reset', 'lost', 'error']) {
      this[name] = [];
      engine.on(name, (e) => {
        this[name].push(e);
        this.all.push({ name, e, at: Date.now() });
        console.log(`[event] ${name} ${JSON.stringify(plain(e))}`);
      });
    }
  }

  of(name, region, hugePageIndex) {
    return this[name].filter(
      (e) => regionName(e.region) === region.name && (hugePageIndex === undefined || e.hugePageIndex === hugePageIndex),
    );
  }
}

// Snapshot of a byte range (a copy, taken through the guarded read).
function snapshot(region, off, len) {
  return Buffer.from(region.read(off, len));
}

// Compare every 4 KiB subpage of [off, off+len) with `snap`, except the `skip` offsets
// (absolute region offsets of lost subpages). Returns {compared, differing, unreadable}.
function compareSubpages(region, off, snap, skip) {
  const skipSet = new Set(skip.map((s) => Math.floor(s / SUB) * SUB));
  const res = { compared: 0, differing: [], unreadable: [] };
  let runStart = null;
  const flushRun = (end) => {
    if (runStart === null) return;
    const len = end - runStart;
    let buf = null;
    try {
      buf = region.read(runStart, len);
    } catch (e) {
      // fall back to per-subpage reads to locate the unreadable ones
      for (let o = runStart; o < end; o += SUB) {
        try {
          const b = region.read(o, SUB);
          res.compared++;
          if (!Buffer.from(b).equals(snap.subarray(o - off, o - off + SUB))) res.differing.push(o);
        } catch (e2) {
          res.unreadable.push(o);
        }
      }
      runStart = null;
      return;
    }
    for (let o = runStart; o < end; o += SUB) {
      res.compared++;
      const a = buf.subarray(o - runStart, o - runStart + SUB);
      if (!a.equals(snap.subarray(o - off, o - off + SUB))) res.differing.push(o);
    }
    runStart = null;
  };
  for (let o = off; o < off + snap.length; o += SUB) {
    if (skipSet.has(o)) flushRun(o);
    else if (runStart === null) runStart = o;
  }
  flushRun(off + snap.length);
  return res;
}

// Expect region.read at `offset` to throw PoisonError (code ERR_POISONED) for `gpa`.
function expectPoisonError(t, region, offset, gpa) {
  let err = null;
  try {
    region.read(offset, 8);
  } catch (e) {
    err = e;
  }
  t.check(`read(${hex(offset)}) of lost memory throws ERR_POISONED`, err && err.code === 'ERR_POISONED', {
    got: err ? plain(err) : 'no error',
  });
  if (err && err.code === 'ERR_POISONED') {
    t.eq(`PoisonError.guestPhysAddr (${hex(offset)}) frame`, frame(err.guestPhysAddr), frame(gpa));
  }
}

// Calls fn(line) for every complete line a child process writes on `stream` (a line split across
// chunks is joined first).
function eachLine(stream, fn) {
  let buf = '';
  stream.on('data', (d) => {
    buf += d;
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      fn(line);
    }
  });
}

module.exports = {
  eachLine,
  KiB, MiB, GiB, SUB, HUGE_DIRS,
  pkg, testing, sleep, hex, plain, same, big, frame, regionName,
  pool, meminfo, pagemapPfn, pagemapEntry, corruptPfn, CORRUPT_PFN, pread, vmas,
  T, CaseFailure, Events, snapshot, compareSubpages, expectPoisonError,
};
