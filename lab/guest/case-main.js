'use strict';
// Runs one lab case in its own process: node case-main.js <id> <result-file>.
// The result file is rewritten after every check, so a crash still leaves what was seen.
const { T } = require('./util');
const { cases } = require('./cases');

async function main() {
  const [id, resultFile] = process.argv.slice(2);
  const c = cases.find((x) => x.id === id);
  if (!c) {
    console.error(`no case ${id}`);
    process.exit(3);
  }
  const t = new T(id, c.name, resultFile);
  try {
    await c.run(t);
  } catch (e) {
    t.error(e);
  }
  try {
    await t.cleanup();
  } catch (e) {
    t.error(e);
  }
  const st = t.finish();
  t.log(`${st.toUpperCase()} (${t.checks.length} checks, ${t.checks.filter((x) => !x.ok).length} failed)`);
  process.exit(0);
}

process.on('unhandledRejection', (e) => {
  console.error('unhandledRejection', e);
});
main();
