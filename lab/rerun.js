'use strict';
// The one case-level re-run the lab allows: a reference-VMM case (k*) whose only failure is a guest
// triple fault (KVM_EXIT_SHUTDOWN) on a vCPU, with every data check passed (no machine check for a
// healthy frame, no wrong byte); the count of machine checks may fall short, since the vCPU that
// stopped does not touch its share of the lost frames (seen on 6.1's k7). Under nested KVM on TCG such shutdowns were
// seen on vCPUs that had no machine check at all, in runs where the lab kernel itself also hit TCG's
// text-patching race; the case is booted once more, and the summary says it was.
//   node lab/rerun.js pick DIR                 -> prints the ids to re-run (comma separated)
//   node lab/rerun.js merge FIRST SECOND IDS   -> FIRST/results.log gets SECOND's results for IDS
const fs = require('fs');
const path = require('path');

const ONLY_THESE_MAY_FAIL = new Set([
  'VMM verdict: no failures',
  'every vCPU stopped cleanly (BYE)',
  'every vCPU resumed verifying after the poison',
  // A vCPU that stopped early touches fewer lost frames: fewer machine checks, never a wrong one.
  'exactly one machine check per lost frame, at its GPA',
  'machine checks injected = lost frames',
  'one machine check for every frame the guest touches in the lost huge page',
]);

function results(dir) {
  const out = [];
  let text = '';
  try {
    text = fs.readFileSync(path.join(dir, 'results.log'), 'utf8');
  } catch {
    return { lines: [], out };
  }
  const lines = text.split('\n');
  for (const line of lines) {
    const m = /LAB-RESULT (\{.*\})\s*$/.exec(line.replace(/\r$/, ''));
    if (!m) continue;
    try {
      out.push(JSON.parse(m[1]));
    } catch {
      /* torn line */
    }
  }
  return { lines, out };
}

function tripleFaultOnly(r) {
  if (r.status !== 'fail' || !/^k\d+$/.test(r.id)) return false;
  const failed = (r.checks || []).filter((c) => !c.ok);
  if (failed.length === 0 || (r.errors && r.errors.length)) return false;
  if (!failed.every((c) => ONLY_THESE_MAY_FAIL.has(c.name))) return false;
  // What the VMM said went wrong: the verdict check, or (cases with their own verdict, k7) the note.
  const verdict = failed.find((c) => c.name === 'VMM verdict: no failures');
  const noted = Object.entries(r.notes || {}).filter(([k, v]) => k.startsWith('failures') && Array.isArray(v)).flatMap(([, v]) => v);
  const why = (verdict && verdict.info && verdict.info.actual) || noted;
  return why.length > 0 && why.some((w) => /triple fault \(KVM_EXIT_SHUTDOWN\)/.test(w)) && why.every((w) => /triple fault|^vCPU states/.test(w));
}

const [cmd, a, b, ids] = process.argv.slice(2);
if (cmd === 'pick') {
  process.stdout.write(results(a).out.filter(tripleFaultOnly).map((r) => r.id).join(','));
} else if (cmd === 'merge') {
  const want = new Set(ids.split(','));
  const first = results(a);
  const second = results(b).out.filter((r) => want.has(r.id));
  const kept = first.lines.filter((l) => {
    const m = /LAB-RESULT (\{.*\})\s*$/.exec(l.replace(/\r$/, ''));
    if (!m) return true;
    try {
      return !want.has(JSON.parse(m[1]).id);
    } catch {
      return true;
    }
  });
  const added = second.map((r) => `LAB-RESULT ${JSON.stringify({ ...r, name: `${r.name} [re-run once after a guest triple fault: see lab/out/<kernel>.first]` })}`);
  const done = kept.findIndex((l) => l.includes('LAB-DONE '));
  if (done >= 0) kept.splice(done, 0, ...added);
  else kept.push(...added);
  fs.writeFileSync(path.join(a, 'results.log'), kept.join('\n'));
  for (const id of want) if (!second.some((r) => r.id === id)) process.stderr.write(`rerun: no result for ${id} in ${b}\n`);
} else {
  process.stderr.write('usage: rerun.js pick DIR | merge FIRST SECOND IDS\n');
  process.exit(2);
}
