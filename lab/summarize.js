'use strict';
// Host side: reads lab/out/<kernel>/{meta.json,results.log,console.log} and prints one
// readable summary per kernel. Exit code 1 on any failed case or a boot that never reported.
// Usage: node lab/summarize.js [--cases LIST] DIR...
const fs = require('fs');
const path = require('path');

const args = process.argv.slice(2);
const dirs = [];
for (let i = 0; i < args.length; i++) {
  if (args[i] === '--cases') i++;
  else dirs.push(args[i]);
}

const rel = (p) => path.relative(process.cwd(), p) || p;
const read = (p) => {
  try {
    return fs.readFileSync(p, 'utf8');
  } catch {
    return '';
  }
};

function parseLines(text) {
  const out = { boot: null, results: [], done: null };
  for (let line of text.split('\n')) {
    line = line.replace(/\r$/, '');
    const m = /(LAB-BOOT|LAB-RESULT|LAB-DONE) (\{.*\})\s*$/.exec(line);
    if (!m) continue;
    let obj;
    try {
      obj = JSON.parse(m[2]);
    } catch {
      continue;
    }
    if (m[1] === 'LAB-BOOT') out.boot = obj;
    else if (m[1] === 'LAB-DONE') out.done = obj;
    else if (!out.results.some((r) => r.id === obj.id)) out.results.push(obj);
  }
  return out;
}

function short(v, n = 400) {
  const s = typeof v === 'string' ? v : JSON.stringify(v);
  return s.length > n ? s.slice(0, n) + '...' : s;
}

let totalPass = 0;
let totalFail = 0;
const table = [];

for (const dir of dirs) {
  const kernel = path.basename(dir);
  let meta = {};
  try {
    meta = JSON.parse(read(path.join(dir, 'meta.json')));
  } catch {
    /* none */
  }
  const consoleText = read(path.join(dir, 'console.log')).replace(/\r/g, '');
  let r = parseLines(read(path.join(dir, 'results.log')));
  if (!r.boot && !r.results.length) r = parseLines(consoleText); // fallback channel
  const problems = [];
  if (meta.error) problems.push(meta.error);
  if (!r.boot && !meta.error) problems.push('the guest never reported (no LAB-BOOT line)');
  if (!r.done && !meta.error) {
    problems.push(
      meta.timedOut
        ? `the boot did not finish within ${meta.timeout} s (killed)`
        : `the boot ended without LAB-DONE (qemu exit ${meta.qemuExit})`,
    );
  }
  const expected = (r.boot && r.boot.cases) || [];
  for (const id of expected) {
    if (!r.results.some((x) => x.id === id)) {
      r.results.push({ id, name: '(no result)', status: 'fail', errors: ['no result: the boot ended before this case reported'], checks: [] });
    }
  }
  const pass = r.results.filter((x) => x.status === 'pass').length;
  const fail = r.results.length - pass + (problems.length && !r.results.some((x) => x.status !== 'pass') ? 1 : 0);
  totalPass += pass;
  totalFail += fail;

  const head = `kernel ${kernel}: ${meta.release || '?'} (${meta.package || 'package ?'})`;
  console.log('');
  console.log(`=== ${head} — ${pass} passed, ${r.results.length - pass} failed${problems.length ? ', INCOMPLETE' : ''}, ${meta.seconds ?? '?'} s ===`);
  for (const x of r.results) {
    const checks = x.checks || [];
    const bad = checks.filter((c) => !c.ok);
    console.log(
      `  ${x.status === 'pass' ? 'PASS' : 'FAIL'}  ${String(x.id).padEnd(3)} ${x.name}  (${((x.ms || 0) / 1000).toFixed(1)} s, ${checks.length} checks${bad.length ? `, ${bad.length} failed` : ''})`,
    );
    if (x.status !== 'pass') {
      for (const c of bad.slice(0, 12)) console.log(`        - ${c.name}${c.info !== undefined ? ': ' + short(c.info) : ''}`);
      if (bad.length > 12) console.log(`        - ... ${bad.length - 12} more failed checks`);
      for (const e of x.errors || []) console.log(`        ! ${short(e, 600).split('\n').slice(0, 4).join(' | ')}`);
    }
  }
  for (const p of problems) console.log(`  !! ${p}`);
  if (problems.length) {
    const tail = consoleText.trimEnd().split('\n').slice(-25);
    console.log('  last console lines:');
    for (const l of tail) console.log('    | ' + l);
  }
  console.log(`  console: ${rel(path.join(dir, 'console.log'))}  results: ${rel(path.join(dir, 'results.log'))}`);
  table.push({ kernel, pass, fail });
}

console.log('');
console.log(`lab: ${totalPass} passed, ${totalFail} failed`);
process.exit(totalFail > 0 || dirs.length === 0 ? 1 : 0);
