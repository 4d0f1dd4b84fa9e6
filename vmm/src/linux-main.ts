// The Linux guest in the reference VMM, from the command line (the demo, and the lab's child process):
//   node dist/vmm/src/linux-main.js [--mode madvise|simulate] [--reports AR,AO] [--loglevel N]
//                                   [--percent N] [--interval MS] [--entry 64|32] [--vcpus N]
//                                   [--mem-lock on|on-fault]
//                                   [--json] [--quiet]
// Prints the guest's console, the engine's events and the VMM's machine checks as they happen,
// one prefixed line each; --json ends with "RESULT <json>". Exit code 0 when every check held.
import * as fs from 'node:fs';
import { runLinuxScenario, type LinuxScenarioOptions } from './linux-scenario';
import { kvmAvailable } from './vmm';

const hex = (v: unknown) => (typeof v === 'bigint' ? '0x' + v.toString(16) : v);

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : undefined;
}

async function main(): Promise<number> {
  const kvm = kvmAvailable();
  if (!kvm.ok) {
    console.error(`linux guest: ${kvm.reason}`);
    return 2;
  }
  const quiet = process.argv.includes('--quiet');
  const json = process.argv.includes('--json');
  const mode = (arg('mode') ?? 'auto') as LinuxScenarioOptions['mode'];
  const tag = { guest: 'guest  │', engine: 'engine │', vmm: 'vmm    │' };
  const o: LinuxScenarioOptions = {
    mode,
    reports: (arg('reports') ?? 'AR,AO').split(',').map((s) => s.trim().toUpperCase()) as ('AR' | 'AO')[],
    loglevel: arg('loglevel') ? Number(arg('loglevel')) : undefined,
    walkerPercent: arg('percent') ? Number(arg('percent')) : undefined,
    walkerIntervalMs: arg('interval') ? Number(arg('interval')) : undefined,
    engine: process.env.RAS_LINUX_ENGINE ? JSON.parse(process.env.RAS_LINUX_ENGINE) : undefined,
    dir2M: process.env.RAS_LINUX_DIR2M,
    entry: arg('entry') === '32' ? 32 : 64,
    vcpus: arg('vcpus') ? Number(arg('vcpus')) : undefined,
    memLock: arg('mem-lock') as LinuxScenarioOptions['memLock'],
    onLine: quiet ? undefined : (src, text) => process.stdout.write(`${tag[src]} ${text}\n`),
  };
  const res = await runLinuxScenario(o);
  if (!quiet) {
    console.log('');
    console.log(`boot to the first heartbeat: ${res.bootMs < 0 ? 'never' : (res.bootMs / 1000).toFixed(1) + ' s'}, whole run ${(res.totalMs / 1000).toFixed(1)} s, heartbeats ${res.heartbeats}, wrong bytes ${res.wrongBytes}, end: ${res.exit?.state}`);
    for (const r of res.reports) {
      console.log(`${r.kind} gpa ${r.gpa} (pfn ${r.pfn}): walker ${r.walker?.kind ?? 'no SIGBUS'}, ${r.heartbeatsAfter} heartbeats after, ${r.ms} ms to "Recovered"`);
      for (const l of r.kernelLines) console.log(`    guest kernel: ${l}`);
    }
    console.log(res.ok ? 'OK' : `FAILED:\n  ${res.failures.join('\n  ')}`);
    if (!res.ok && res.bootMs < 0 && fs.existsSync('/sys/module/kvm_pvm'))
      console.log(
        "This machine's /dev/kvm is kvm-pvm: it runs small guests, but it ran this kernel's decompressor through its instruction " +
          'emulator and stopped at an instruction it does not know (see vmm/linux/README.md). Watch it in the lab instead: LAB_VERBOSE=1 npm run test:lab:linux',
      );
  }
  if (json) process.stdout.write(`RESULT ${JSON.stringify(res, (_k, v) => hex(v))}\n`);
  return res.ok ? 0 : 1;
}

main().then(
  (c) => {
    process.exitCode = c;
  },
  (e) => {
    console.error(e);
    process.exitCode = 1;
  },
);
