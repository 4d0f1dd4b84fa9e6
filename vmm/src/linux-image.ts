// The Linux guest's image and RAM: Debian's kernel the lab cached, the initramfs built from
// vmm/linux/, and the two hugetlb regions its e820 map describes.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { execFileSync } from 'node:child_process';
import { packageRoot } from './native';
import { MiB, type VmmRegionSpec } from './vmm';

/** Guest RAM for the Linux guest: two regions of 2 MiB pages (the e820 map has one RAM entry each). */
export function linuxRegions(lowMiB = 160, highMiB = 64): VmmRegionSpec[] {
  return [
    { name: 'low', pageSize: '2M', size: lowMiB * MiB, guestPhysAddr: 0n },
    { name: 'high', pageSize: '2M', size: highMiB * MiB, guestPhysAddr: 0x10000000n },
  ];
}

/** Debian's 6.12 vmlinuz: $RAS_LINUX_KERNEL, else the newest the lab cached (lab/cache/kernels/6.12). */
export function findKernel(): string | undefined {
  const env = process.env.RAS_LINUX_KERNEL;
  if (env) return fs.existsSync(env) ? env : undefined;
  const dir = path.join(packageRoot(), 'lab', 'cache', 'kernels', '6.12');
  if (!fs.existsSync(dir)) return undefined;
  const builds = fs.readdirSync(dir).filter((d) => fs.existsSync(path.join(dir, d, 'vmlinuz'))).sort();
  return builds.length ? path.join(dir, builds[builds.length - 1], 'vmlinuz') : undefined;
}

/** The guest's initramfs: $RAS_LINUX_INITRD, else built by vmm/linux/build-initramfs.sh into build/linux/ when stale. */
export function initramfs(): string {
  const env = process.env.RAS_LINUX_INITRD;
  if (env) return env;
  const root = packageRoot();
  const src = path.join(root, 'vmm', 'linux');
  const out = path.join(root, 'build', 'linux', 'initramfs.cpio');
  const newest = Math.max(...fs.readdirSync(src).map((f) => fs.statSync(path.join(src, f)).mtimeMs));
  if (!fs.existsSync(out) || fs.statSync(out).mtimeMs < newest) {
    execFileSync('bash', [path.join(src, 'build-initramfs.sh'), path.dirname(out)], { stdio: ['ignore', 'ignore', 'inherit'] });
  }
  return out;
}
