# shellcheck shell=bash
# Builds the guest's initramfs: one base cpio (busybox, node + its libraries, the package,
# lab/guest) shared by all kernels, plus a small per-kernel cpio (hwpoison-inject.ko)
# appended to it. Uncompressed: the kernel unpacks it without spending TCG time on gzip.

copy_with_libs() { # copy_with_libs ROOTFS BINARY DEST_IN_ROOTFS
  local r="$1" bin="$2" dest="$3" lib
  install -D -m 755 "$bin" "$r$dest"
  for lib in $(ldd "$bin" | awk '/=>/ && $3 ~ /^\// {print $3} /^[[:space:]]*\/[^ ]*ld-linux/ {print $1}'); do
    [ -e "$r$lib" ] && continue
    install -D -m 755 "$(readlink -f "$lib")" "$r$lib"
  done
}

build_base_rootfs() {
  local r="$OUT/rootfs" t0=$SECONDS
  rm -rf "$r"
  mkdir -p "$r"/{bin,sbin,usr/bin,proc,sys,dev,tmp,run,root,etc,mnt/huge2m,mnt/huge1g,lib/modules,pkg/build/Release,pkg/lab}
  install -m 755 "$BUSYBOX" "$r/bin/busybox"
  ln -s busybox "$r/bin/sh"
  copy_with_libs "$r" "$NODE_BIN" /usr/bin/node
  # Debian's node_exporter (CI installs it), so case o1 scrapes the engine's textfile inside the guest.
  if [ -x /usr/bin/prometheus-node-exporter ]; then
    copy_with_libs "$r" /usr/bin/prometheus-node-exporter /usr/bin/prometheus-node-exporter
  fi
  copy_with_libs "$r" "$ROOT/build/Release/hugetlb_ras.node" /pkg/build/Release/hugetlb_ras.node
  # The reference VMM (vmm/): its KVM module and its guest's flat binary (dist/vmm comes with dist).
  copy_with_libs "$r" "$ROOT/build/Release/ras_vmm.node" /pkg/build/Release/ras_vmm.node
  install -m 644 "$ROOT/build/Release/ras_vmm_guest.bin" "$r/pkg/build/Release/ras_vmm_guest.bin"
  # Its Linux mode's initramfs (busybox + the walker, vmm/linux); the kernel comes per kernel below.
  bash "$ROOT/vmm/linux/build-initramfs.sh" "$OUT/linux-guest" >/dev/null
  install -D -m 644 "$OUT/linux-guest/initramfs.cpio" "$r/pkg/build/linux/initramfs.cpio"
  echo "root:x:0:0:root:/root:/bin/sh" >"$r/etc/passwd"
  echo "root:x:0:" >"$r/etc/group"
  # The unprivileged VMM of the KVM cases runs as nobody.
  echo "nobody:x:65534:65534:nobody:/tmp:/bin/sh" >>"$r/etc/passwd"
  echo "nogroup:x:65534:" >>"$r/etc/group"

  cp "$ROOT/package.json" "$r/pkg/"
  cp -a "$ROOT/dist" "$r/pkg/dist"
  find "$r/pkg/dist" -name '*.map' -delete
  local m
  for m in $(node "$LAB_DIR/lib/runtime-deps.js" "$ROOT"); do
    mkdir -p "$r/pkg/$(dirname "$m")"
    cp -a "$ROOT/$m" "$r/pkg/$m"
  done
  cp -a "$LAB_DIR/guest" "$r/pkg/lab/guest"
  install -m 755 "$LAB_DIR/guest/init.sh" "$r/init"
  # Holds KVM's static keys on for the run (lab/lib/kvm-hold.c says why); without a C compiler the
  # lab runs without it (the per-case VMs then patch kernel text, which TCG sometimes crashes on).
  if command -v cc >/dev/null && cc -static -O2 -Wall -o "$r/usr/bin/kvm-hold" "$LAB_DIR/lib/kvm-hold.c"; then :; else
    log "no kvm-hold (cc -static failed): KVM cases may meet the TCG int3 crash the reboot handles"
  fi

  (cd "$r" && find . -mindepth 1 -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --owner=0:0 --quiet) >"$OUT/base.cpio"
  log "initramfs base: $(du -m "$OUT/base.cpio" | cut -f1) MiB in $((SECONDS - t0)) s (modules: $(node "$LAB_DIR/lib/runtime-deps.js" "$ROOT" | sed 's#node_modules/##' | tr '\n' ' '))"
}

build_initrd() {
  local mm="$1" d="$OUT/$1"
  rm -rf "$d"
  mkdir -p "$d/extra/lib/modules" "$d/extra/etc"
  [ -f "$KDIR/hwpoison-inject.ko" ] && cp "$KDIR/hwpoison-inject.ko" "$d/extra/lib/modules/"
  if [ -f "$KDIR/kvm/order" ]; then
    mkdir -p "$d/extra/lib/modules/kvm"
    cp "$KDIR/kvm/"*.ko "$KDIR/kvm/order" "$d/extra/lib/modules/kvm/"
  fi
  cp "$KDIR/release" "$d/extra/etc/lab-kernel-release"
  # The reference VMM's Linux guest boots the same kernel image (lab case L1).
  mkdir -p "$d/extra/pkg/linux"
  cp "$KDIR/vmlinuz" "$d/extra/pkg/linux/vmlinuz"
  echo "$mm" >"$d/extra/etc/lab-kernel"
  (cd "$d/extra" && find . -mindepth 1 -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --owner=0:0 --quiet) >"$d/extra.cpio"
  cat "$OUT/base.cpio" "$d/extra.cpio" >"$d/initrd.cpio"
  rm -rf "$d/extra" "$d/extra.cpio"
}
