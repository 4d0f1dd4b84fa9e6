#!/usr/bin/env bash
# Builds the reference VMM's Linux guest initramfs: Debian's static busybox, the walker (static
# C, built here with gcc) and /init. Usage: build-initramfs.sh OUT_DIR -> OUT_DIR/initramfs.cpio
# (uncompressed: the guest kernel unpacks it without spending time on gzip).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
OUT="${1:?usage: build-initramfs.sh OUT_DIR}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"

busybox=""
for b in /bin/busybox /usr/bin/busybox; do
  [ -x "$b" ] || continue
  case "$(LC_ALL=C ldd "$b" 2>&1 || true)" in *"not a dynamic executable"*|*"statically linked"*) busybox="$b"; break ;; esac
done
[ -n "$busybox" ] || { echo "build-initramfs: no static busybox (apt-get install busybox-static)" >&2; exit 2; }
command -v cpio >/dev/null || { echo "build-initramfs: no cpio (apt-get install cpio)" >&2; exit 2; }

r="$(mktemp -d "$OUT/rootfs.XXXXXX")"
trap 'rm -rf "$r"' EXIT
mkdir -p "$r"/{bin,sbin,dev,proc,sys,tmp}
gcc -static -O2 -Wall -Wextra -Werror -o "$r/walker" "$HERE/walker.c"
install -m 755 "$busybox" "$r/bin/busybox"
install -m 755 "$HERE/init.sh" "$r/init"
(cd "$r" && find . -mindepth 1 -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --owner=0:0 --quiet) >"$OUT/initramfs.cpio.tmp"
mv "$OUT/initramfs.cpio.tmp" "$OUT/initramfs.cpio"
echo "$OUT/initramfs.cpio"
