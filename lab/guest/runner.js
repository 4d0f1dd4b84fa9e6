'use strict';
// Guest-side orchestrator: runs every selected case in its own node process (so a crash
// or hang of one case cannot hide the others) and writes one machine-readable line per
// case to /dev/ttyS1 (the host's out/<kernel>/results.log):
//   LAB-BOOT {..}   LAB-RESULT {..} (one per case)   LAB-DONE {..}
const fs = require('fs');
const path = require('path');
const { spawnSync } = require('child_process');
const { cases, selectCases } = require('./cases');
const { pool, meminfo, MiB, GiB } = require('./util');

const cmdline = fs.readFileSync('/proc/cmdline', 'utf8').trim();
const param = (k, d) => {
  const m = new RegExp(`(?:^|\\s)${k.replace('.', '\\.')}=(\\S*)`).exec(cmdline);
  return m ? m[1] : d;
};
const kernel = param('lab.kernel', '');
const wanted = param('lab.cases', '');
const labTimeout = parseInt(param('lab.timeout', '600'), 10);
const caseTimeout = parseInt(param('lab.case_timeout', '240'), 10);

const RESULT_TTY = '/dev/ttyS1';
function emit(tag, obj) {
  const line = `${tag} ${JSON.stringify(obj)}\n`;
  try {
    const fd = fs.openSync(RESULT_TTY, 'w');
    fs.writeSync(fd, line);
    fs.closeSync(fd); // closing a serial tty waits until the bytes are sent
  } catch (e) {
    process.stdout.write(line); // fallback: the host also scans the console
  }
  process.stdout.write(`lab: ${tag}${obj.id ? ' case ' + obj.id : ''}${obj.status ? ' ' + obj.status : ''}\n`);
}

function uptime() {
  return parseFloat(fs.readFileSync('/proc/uptime', 'utf8').split(' ')[0]);
}

function cleanHugetlbfs() {
  for (const d of ['/mnt/huge2m', '/mnt/huge1g']) {
    try {
      for (const f of fs.readdirSync(d)) fs.rmSync(path.join(d, f), { force: true });
    } catch {
      /* not mounted */
    }
  }
}

const selected = selectCases(kernel, wanted);
emit('LAB-BOOT', {
  kernel,
  release: fs.readFileSync('/proc/sys/kernel/osrelease', 'utf8').trim(),
  version: fs.readFileSync('/proc/version', 'utf8').trim(),
  uptime: uptime(),
  cases: selected.map((c) => c.id),
  pool2M: pool(2 * MiB),
  pool1G: pool(GiB),
  memTotalKiB: meminfo().MemTotal,
});

let passed = 0;
let failed = 0;
for (const c of selected) {
  const remaining = labTimeout - uptime() - 10;
  const limit = Math.min(c.timeout || caseTimeout, remaining);
  const resultFile = `/tmp/result-${c.id}.json`;
  let result;
  if (limit < 15) {
    result = { id: c.id, name: c.name, status: 'fail', ms: 0, errors: ['not run: the lab time limit was reached'], checks: [] };
  } else {
    const t0 = Date.now();
    console.log(`lab: ===== case ${c.id}: ${c.name} (limit ${Math.round(limit)} s) =====`);
    const r = spawnSync(process.execPath, [path.join(__dirname, 'case-main.js'), c.id, resultFile], {
      stdio: ['ignore', 'inherit', 'inherit'],
      timeout: Math.floor(limit * 1000), // an integer: spawnSync throws ERR_OUT_OF_RANGE otherwise
      killSignal: 'SIGKILL',
    });
    try {
      result = JSON.parse(fs.readFileSync(resultFile, 'utf8'));
    } catch {
      result = { id: c.id, name: c.name, status: 'fail', checks: [], errors: [] };
    }
    result.ms = Date.now() - t0;
    const timedOut = r.error && r.error.code === 'ETIMEDOUT';
    if (timedOut) {
      result.status = 'fail';
      result.errors = (result.errors || []).concat(`timed out after ${Math.round(limit)} s (killed); last checks shown are what it reached`);
    } else if (r.signal || r.status !== 0) {
      result.status = 'fail';
      result.errors = (result.errors || []).concat(
        `case process died: ${r.signal ? 'signal ' + r.signal : 'exit code ' + r.status} (the engine must keep the process alive)`,
      );
    } else if (result.status !== 'pass' && result.status !== 'fail') {
      result.status = 'fail';
      result.errors = (result.errors || []).concat('case did not finish');
    }
    result.pool2MAfter = pool(2 * MiB);
    cleanHugetlbfs();
  }
  if (result.status === 'pass') passed++;
  else failed++;
  emit('LAB-RESULT', result);
}

emit('LAB-DONE', { kernel, passed, failed, uptime: uptime(), pool2M: pool(2 * MiB), pool1G: pool(GiB) });
