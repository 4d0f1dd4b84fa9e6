'use strict';
// Lab case for what operators see (issue 23) with REAL poison: the node_exporter textfile the engine
// keeps (metrics option), the QMP-shaped event log and the status socket, after MADV_HWPOISON.
// 6.12: recovered (a 4 KiB loss); 6.1: refused (the whole huge page). Debian's node_exporter (put in
// the initramfs where the host has it, as CI does) serves the textfile on 127.0.0.1 inside the guest
// and is scraped over HTTP; the .prom text is also noted in the results.
// Registered from cases.js: require('./cases-ops').register(def, helpers).
const fs = require('fs');
const os = require('os');
const path = require('path');
const { spawn, spawnSync } = require('child_process');
const U = require('./util');

const { MiB, SUB, hex } = U;
const HP = 2 * MiB;
const SEED = 0x0b5;

function sample(text, name, labels) {
  for (const line of text.split('\n')) {
    const m = /^([a-z_:]+)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const have = Object.fromEntries([...(m[2] || '').matchAll(/(\w+)="([^"]*)"/g)].map((x) => [x[1], x[2]]));
    if (Object.entries(labels || {}).every(([k, v]) => have[k] === v)) return Number(m[3]);
  }
  return undefined;
}

const NODE_EXPORTER = '/usr/bin/prometheus-node-exporter';

// node_exporter with only the textfile collector, on loopback; its /metrics body, or throws.
async function scrapeNodeExporter(t, dir) {
  spawnSync('/bin/busybox', ['ip', 'link', 'set', 'lo', 'up']);
  const addr = '127.0.0.1:9911';
  const ne = spawn(NODE_EXPORTER, ['--web.listen-address=' + addr, '--collector.disable-defaults', '--collector.textfile',
    '--collector.textfile.directory=' + dir], { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  ne.stderr.on('data', (d) => { err += d; });
  try {
    for (let i = 0; i < 300; i++) {
      try {
        const res = await fetch(`http://${addr}/metrics`);
        const body = await res.text();
        if (body.includes('hugetlb_ras_')) return body;
      } catch { /* not listening yet (TCG is slow) */ }
      await new Promise((r) => setTimeout(r, 200));
    }
    throw new Error('node_exporter served no hugetlb_ras_ sample in 60 s: ' + err.slice(-500));
  } finally {
    ne.kill('SIGKILL');
  }
}

function register(def, helpers) {
  def({
    id: 'o1',
    name: 'operators with real poison: the metrics textfile, the QMP-shaped event log and the status socket',
    kernels: ['6.12', '6.1'],
    async run(t) {
      const kernel = fs.readFileSync('/etc/lab-kernel', 'utf8').trim();
      const outcome = kernel === '6.1' ? 'refused' : 'recovered';
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lab-o1-'));
      t.onCleanup(() => fs.rmSync(dir, { recursive: true, force: true }));
      const promFile = path.join(dir, 'hugetlb-ras-o1.prom');
      const log = path.join(dir, 'events.ndjson');
      const sock = path.join(dir, 'status.sock');
      const { engine, ev } = t.openEngine({ metrics: { textfileDir: dir, name: 'o1' }, eventLog: log, statusSocket: sock });
      const gpa0 = 0xd_0000_0000n;
      const region = t.mapRegion(engine, { name: 'o1', path: t.hugePath(HP, 'o1'), size: 2 * HP, guestPhysAddr: gpa0 });
      U.testing().fillPattern(region, SEED);
      const off = HP + 21 * SUB;
      await t.inject(engine, region, off);
      await helpers.reportReached(t, engine, ev, region, off, SEED, outcome);
      await new Promise((r) => setImmediate(r));
      await engine.outputsOpened.textfile.flush();
      const text = fs.readFileSync(promFile, 'utf8');
      t.note('o1: the textfile (hugetlb_ras_ samples)', text.split('\n').filter((l) => l.startsWith('hugetlb_ras_') && !l.includes('_bucket')).join('\n'));
      t.eq(`o1: memory_errors_total{kind=AR,outcome=${outcome}}`, sample(text, 'hugetlb_ras_memory_errors_total', { region: 'o1', kind: 'AR', outcome }), 1);
      t.eq('o1: lost_bytes_total', sample(text, 'hugetlb_ras_lost_bytes_total', { region: 'o1', outcome }), outcome === 'recovered' ? SUB : HP);
      t.eq('o1: lost_bytes (now)', sample(text, 'hugetlb_ras_lost_bytes', { region: 'o1' }), outcome === 'recovered' ? SUB : HP);
      if (outcome === 'recovered') t.eq('o1: recovery_duration_seconds_count', sample(text, 'hugetlb_ras_recovery_duration_seconds_count', { region: 'o1', page_size: '2M' }), 1);
      if (fs.existsSync(NODE_EXPORTER)) {
        const body = await scrapeNodeExporter(t, dir);
        t.note('o1: scraped from node_exporter (hugetlb_ras_ samples)', body.split('\n').filter((l) => l.startsWith('hugetlb_ras_') && !l.includes('_bucket')).join('\n'));
        t.eq(`o1: node_exporter serves memory_errors_total{kind=AR,outcome=${outcome}}`, sample(body, 'hugetlb_ras_memory_errors_total', { region: 'o1', kind: 'AR', outcome }), 1);
        t.eq('o1: node_exporter serves lost_bytes_total', sample(body, 'hugetlb_ras_lost_bytes_total', { region: 'o1', outcome }), outcome === 'recovered' ? SUB : HP);
        t.eq('o1: node_exporter read the textfile without error', sample(body, 'node_textfile_scrape_error'), 0);
      } else {
        t.note('o1: node_exporter', `not in this initramfs (${NODE_EXPORTER} absent on the host: apt-get install prometheus-node-exporter); the textfile is checked directly`);
      }
      const lines = fs.readFileSync(log, 'utf8').trim().split('\n').filter(Boolean);
      t.note('o1: the event log', lines);
      const all = lines.map((l) => JSON.parse(l));
      // On 6.1 the engine's own access finds the refused page (already lost): QEMU's hypervisor case.
      const evs = all.filter((e) => e.data.recipient === 'guest');
      t.eq('o1: the other events are the engine\'s own accesses (hypervisor, ignore, already-lost)', all.filter((e) => e.data.recipient !== 'guest').map((e) => [e.data.action, e.data['hugetlb-ras'].outcome]).filter(([a, o]) => a !== 'ignore' || o !== 'already-lost'), []);
      t.eq('o1: one QMP event for the guest', evs.length, 1);
      if (evs.length === 1) {
        const e = evs[0];
        t.eq('o1: QMP members', Object.keys(e).sort(), ['data', 'event', 'timestamp']);
        t.eq('o1: QMP event, recipient, action, flags', [e.event, e.data.recipient, e.data.action, e.data.flags], ['MEMORY_FAILURE', 'guest', 'inject', { 'action-required': true, recursive: false }]);
        const lost = outcome === 'recovered' ? gpa0 + BigInt(off) : gpa0 + BigInt(HP);
        t.eq('o1: the lost frame named', e.data['hugetlb-ras']['guest-physical-address'], hex(lost));
        t.check('o1: timestamp is wall clock now', Math.abs(e.timestamp.seconds - Date.now() / 1000) < 600, e.timestamp);
      }
      const { queryStatusSocket } = require(path.join(process.env.LAB_PKG || path.resolve(__dirname, '..', '..'), 'dist', 'src', 'status', 'server.js'));
      await engine.outputsOpened.statusServer.listening();
      const st = await t.within('status socket', queryStatusSocket(sock), 30000);
      t.note('o1: status', st);
      t.eq('o1: status: lost frames of o1', st.regions.map((r) => [r.name, r.lostFrames, r.lostBytes]), [['o1', 1, outcome === 'recovered' ? SUB : HP]]);
      engine.close();
      t.check('o1: the textfile is removed on close', !fs.existsSync(promFile));
      t.check('o1: the socket is removed on close', !fs.existsSync(sock));
    },
  });
}

module.exports = { register };
