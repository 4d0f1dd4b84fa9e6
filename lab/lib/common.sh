# shellcheck shell=bash
# Helpers shared by lab/run.sh. Sourced, not run.

log() { printf '[lab %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
err() { printf '[lab %s] ERROR: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { err "$*"; exit 2; }

APT_UPDATED=0
apt_update_once() {
  if [ "$APT_UPDATED" = 0 ]; then
    log "apt-get update"
    DEBIAN_FRONTEND=noninteractive apt-get update -q >"$OUT/apt-update.log" 2>&1 \
      || { tail -20 "$OUT/apt-update.log" >&2; return 1; }
    APT_UPDATED=1
  fi
}

apt_install() {
  [ "${LAB_NO_INSTALL:-0}" = 1 ] && die "missing host packages: $* (LAB_NO_INSTALL=1)"
  [ "$(id -u)" = 0 ] || die "missing host packages: $* (run as root, or: sudo apt-get install $*)"
  log "installing $*"
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" \
      >"$OUT/apt-install.log" 2>&1; then
    apt_update_once || die "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" \
      >"$OUT/apt-install.log" 2>&1 || { tail -20 "$OUT/apt-install.log" >&2; die "apt-get install $* failed"; }
  fi
}

# A statically linked busybox (the guest has no libc besides the one copied for node,
# but a static one keeps /init independent of it).
find_static_busybox() {
  local b
  for b in /bin/busybox /usr/bin/busybox /usr/lib/initramfs-tools/bin/busybox; do
    [ -x "$b" ] || continue
    case "$(LC_ALL=C ldd "$b" 2>&1 || true)" in *"not a dynamic executable"*|*"statically linked"*)
      echo "$b"; return 0 ;;
    esac
  done
  return 1
}

ensure_host_tools() {
  local need=()
  command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
  find_static_busybox >/dev/null || need+=(busybox-static)
  command -v cpio >/dev/null || need+=(cpio)
  command -v xz >/dev/null || need+=(xz-utils)
  command -v timeout >/dev/null || need+=(coreutils)
  command -v dpkg-deb >/dev/null || die "dpkg-deb not found: the lab needs a Debian-based host"
  command -v apt-get >/dev/null || die "apt-get not found: the lab needs a Debian-based host"
  command -v node >/dev/null || die "node not found on PATH"
  if [ ${#need[@]} -gt 0 ]; then apt_install "${need[@]}"; fi
  BUSYBOX="$(find_static_busybox)" || die "no statically linked busybox after installing busybox-static"
  QEMU="$(command -v qemu-system-x86_64)"
  NODE_BIN="$(readlink -f "$(command -v node)")"
  log "tools: $("$QEMU" --version | head -1); node $("$NODE_BIN" --version) ($NODE_BIN); busybox $BUSYBOX"
}

ensure_build() {
  local addon="$ROOT/build/Release/hugetlb_ras.node" entry="$ROOT/dist/src/index.js"
  if [ ! -f "$addon" ] || [ ! -f "$entry" ]; then
    if [ -d "$ROOT/node_modules/node-addon-api" ] && [ -f "$ROOT/binding.gyp" ]; then
      log "build output missing: running npm run build"
      (cd "$ROOT" && npm run build) || die "npm run build failed"
    fi
  fi
  [ -f "$addon" ] || die "missing $addon: run 'npm install' (or 'npm run build') first"
  [ -f "$ROOT/build/Release/ras_vmm.node" ] && [ -f "$ROOT/build/Release/ras_vmm_guest.bin" ] \
    || die "missing build/Release/ras_vmm.node or ras_vmm_guest.bin (the reference VMM): run 'npm install' first"
  [ -f "$entry" ] || die "missing $entry: run 'npm install' (or 'npm run build') first"
  local m
  for m in bindings file-uri-to-path; do
    [ -f "$ROOT/node_modules/$m/package.json" ] || die "missing node_modules/$m: run 'npm install' first"
  done
  if [ -n "$(find "$ROOT/src" "$ROOT/native" -newer "$entry" -type f 2>/dev/null | head -1)" ] \
     || [ -n "$(find "$ROOT/native" -newer "$addon" -type f 2>/dev/null | head -1)" ]; then
    log "warning: src/ or native/ is newer than the build output (run 'npm run build' to test the latest code)"
  fi
}
