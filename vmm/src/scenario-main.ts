// A scenario in its own process: node dist/vmm/src/scenario-main.js '<json ScenarioOptions>'.
// Prints "RESULT <json>" at the end. With mode 'external' it prints "POISON-READY <json targets
// and pid>" and waits for a "POISONED" line on stdin (the lab's root parent poisons through
// hwpoison-inject corrupt-pfn, with the pfn it reads from this process's pagemap).
import * as readline from 'node:readline';
import { runScenario, toJson, type ScenarioOptions } from './scenario';

async function main(): Promise<void> {
  const o = JSON.parse(process.argv[2] ?? '{}', (_k, v) => (typeof v === 'string' && /^0x[0-9a-f]+n$/.test(v) ? BigInt(v.slice(0, -1)) : v)) as ScenarioOptions;
  if (o.regions) for (const r of o.regions) r.guestPhysAddr = BigInt(r.guestPhysAddr);
  const lines = readline.createInterface({ input: process.stdin });
  const waiting: ((l: string) => void)[] = [];
  lines.on('line', (l) => waiting.shift()?.(l));
  o.log = (m) => process.stderr.write(`[vmm ${process.pid}] ${m}\n`);
  o.poisonExternally = async (targets) => {
    process.stdout.write(`POISON-READY ${toJson({ pid: process.pid, uid: process.getuid?.(), targets })}\n`);
    const l = await new Promise<string>((r) => waiting.push(r));
    if (l.trim() !== 'POISONED') throw new Error(`external poison failed: ${l}`);
  };
  try {
    const res = await runScenario(o);
    process.stdout.write(`RESULT ${toJson(res)}\n`);
  } finally {
    // An open stdin pipe would keep this process alive after a failure (seen in the lab: RESULT
    // printed, then epoll_wait forever).
    lines.close();
    process.stdin.destroy();
  }
}

main().catch((e) => {
  process.stdout.write(`RESULT ${JSON.stringify({ ok: false, failures: [String(e && e.stack ? e.stack : e)] })}\n`);
  process.exitCode = 1;
});
