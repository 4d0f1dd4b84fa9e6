#!/usr/bin/env bash
# Builds the reference VMM's guest: freestanding C + assembly -> ELF (guest.ld) -> flat binary.
# Usage: vmm/guest/build.sh OUT.bin   (run by binding.gyp's ras_vmm target, i.e. by npm install)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="$1"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
CC="${GUEST_CC:-gcc}"
cflags=(-m64 -O2 -std=gnu11 -ffreestanding -fno-pic -fno-pie -fno-stack-protector -mno-red-zone
        -mgeneral-regs-only -fno-asynchronous-unwind-tables -fno-builtin -Wall -Wextra -Werror -I"$here")
"$CC" "${cflags[@]}" -c "$here/guest.c" -o "$tmp/guest.o"
"$CC" -m64 -c "$here/entry.S" -o "$tmp/entry.o"
rwx=(); ld --help 2>/dev/null | grep -q no-warn-rwx-segments && rwx=(--no-warn-rwx-segments)
ld -nostdlib -static -no-pie --build-id=none -z noexecstack "${rwx[@]}" -T "$here/guest.ld" "$tmp/entry.o" "$tmp/guest.o" -o "$tmp/guest.elf"
mkdir -p "$(dirname "$out")"
objcopy -O binary "$tmp/guest.elf" "$out.tmp"
size=$(stat -c %s "$out.tmp")
[ "$size" -le $((0x70000)) ] || { echo "guest image too large: $size bytes" >&2; exit 1; }
mv "$out.tmp" "$out"
