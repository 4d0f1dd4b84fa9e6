// The reference VMM's Linux mode on this machine, without running the guest: the boot protocol
// loader puts Debian's bzImage, the walker initramfs and the zero page into engine regions and the
// e820 map the guest gets is built from those regions. (Booting it needs a KVM that runs a guest
// kernel natively: the lab case L1, npm run test:lab:linux. This machine's kvm-pvm stops in the
// decompressor: see vmm/README.md.) Skips where /dev/kvm or the cached 6.12 kernel is missing.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { DIR_2M } from './helpers';

const ROOT = path.resolve(__dirname, '..');

function kvmUsable(): boolean {
  try {
    fs.accessSync('/dev/kvm', fs.constants.R_OK | fs.constants.W_OK);
    return true;
  } catch {
    return false;
  }
}

function cachedKernel(): string | undefined {
  if (process.env.RAS_LINUX_KERNEL) return process.env.RAS_LINUX_KERNEL;
  const dir = path.join(ROOT, 'lab/cache/kernels/6.12');
  if (!fs.existsSync(dir)) return undefined;
  const b = fs.readdirSync(dir).filter((d) => fs.existsSync(path.join(dir, d, 'vmlinuz'))).sort();
  return b.length ? path.join(dir, b[b.length - 1], 'vmlinuz') : undefined;
}

const kernel = cachedKernel();
const why = !kvmUsable() ? 'no usable /dev/kvm' : !kernel ? 'no cached Debian 6.12 kernel (lab/cache/kernels/6.12: run the lab once, or set RAS_LINUX_KERNEL)' : '';

describe.skipIf(why !== '')(`reference VMM, Linux mode: boot protocol and e820 from the regions${why ? ` (skipped: ${why})` : ''}`, () => {
  it('loads the bzImage at 1 MiB (64-bit or 32-bit entry), the initrd high in the first region, one e820 RAM entry per region', () => {
    const script = `
      const { LinuxGuest, linuxRegions } = require(${JSON.stringify(path.join(ROOT, 'dist/vmm/src/linux.js'))});
      const g = LinuxGuest.open({ kernel: ${JSON.stringify(kernel)}, regions: linuxRegions(96, 32), dir2M: ${JSON.stringify(DIR_2M)} });
      const i = g.info();
      g.close();
      const g32 = LinuxGuest.open({ kernel: ${JSON.stringify(kernel)}, regions: linuxRegions(96, 32), dir2M: ${JSON.stringify(DIR_2M)}, entry: 32 });
      const i32 = g32.info();
      g32.close();
      process.stdout.write(JSON.stringify({ ...i, cmdline: g.cmdline, entry32: i32.entry, entry64of32: i32.entry64 }, (k, v) => (typeof v === 'bigint' ? v.toString() : v)));`;
    const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 60_000 });
    expect(r.status, r.stderr).toBe(0);
    const info = JSON.parse(r.stdout);
    expect(info.bootProtocol).toBeGreaterThanOrEqual(0x20a);
    // 64-bit entry (default): startup_64 at the load address + 0x200; 32-bit: code32_start.
    expect(info.entry64).toBe(true);
    expect(info.entry).toBe(String(0x100200));
    expect(info.entry64of32).toBe(false);
    expect(info.entry32).toBe(String(0x100000));
    const image = fs.readFileSync(kernel!);
    const setupSects = image[0x1f1] || 4;
    expect(info.kernelSize).toBe(image.length - (setupSects + 1) * 512); // the protected-mode kernel
    const MiB = 1 << 20;
    // The first region: 640 KiB of low memory and everything above 1 MiB; the second as it is.
    expect(info.e820Ram).toEqual([
      { gpa: '0', size: 0x9fc00 },
      { gpa: String(0x100000), size: 96 * MiB - 0x100000 },
      { gpa: String(0x10000000), size: 32 * MiB },
    ]);
    const initrd = Number(info.initrdGpa);
    expect(initrd % (2 * MiB)).toBe(0);
    expect(initrd).toBeGreaterThanOrEqual(16 * MiB);
    expect(initrd + info.initrdSize).toBeLessThanOrEqual(96 * MiB);
    expect(info.initrdSize).toBe(fs.statSync(path.join(ROOT, 'build/linux/initramfs.cpio')).size);
    expect(info.cmdline).toMatch(/earlyprintk=serial,ttyS0,115200 keep_bootcon/);
    expect(info.cmdline).toMatch(/reboot=k/);
  });
});
