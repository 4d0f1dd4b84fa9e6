#!/usr/bin/env bash
# Installs the packed package the way a locked-down hypervisor host would: in a fresh directory, with
# no compiler on PATH, no node-gyp headers cached, and no network (a network namespace of its own).
# Then requires it, runs the demo and the reference VMM's KVM demo (skipped, with the reason, where
# there is no /dev/kvm). The same with --ignore-scripts. A control: --build-from-source must fail
# there (nothing to build with), so the installs above are proven to use the prebuilt binary.
# Usage: scripts/check-offline-install.sh [TARBALL]   (default: npm pack of this checkout). As root
# (unshare -n); the npm cache must hold the dependencies (any earlier `npm install` of the checkout).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
WORK="$(mktemp -d /tmp/hugetlb-ras-offline.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
say() { echo "offline-install: $*"; }

if [ $# -ge 1 ]; then TGZ="$(readlink -f "$1")"; else
  (cd "$ROOT" && npm pack --silent --pack-destination "$WORK" >/dev/null)
  TGZ="$(ls "$WORK"/hugetlb-ras-*.tgz)"
fi
case "$(tar -tzf "$TGZ")" in *package/build/Release/hugetlb_ras.node*) ;; *) say "FAIL: $TGZ carries no prebuilt binary"; exit 1 ;; esac

# A PATH with node and npm only: no cc, c++, make, python3 (node-gyp's tools).
mkdir -p "$WORK/bin" "$WORK/home"
ln -s "$(command -v node)" "$WORK/bin/node"
ln -s "$(command -v sh)" "$WORK/bin/sh" # npm runs install scripts with sh
NPM_CLI="$(readlink -f "$(command -v npm)")"
printf '#!/bin/sh\nexec "%s" "%s" "$@"\n' "$(command -v node)" "$NPM_CLI" > "$WORK/bin/npm"
chmod +x "$WORK/bin/npm"
for tool in cc gcc c++ g++ make python3; do
  if PATH="$WORK/bin" command -v "$tool" >/dev/null 2>&1; then say "FAIL: $tool is on the test PATH"; exit 1; fi
done
CACHE="$(npm config get cache)"

# Runs a command with that PATH, no network, an empty HOME (node-gyp keeps its headers in
# ~/.cache/node-gyp: none there), npm offline.
isolated() {
  unshare -n env -i PATH="$WORK/bin" HOME="$WORK/home" npm_config_cache="$CACHE" npm_config_offline=true npm_config_foreground_scripts=true \
    npm_config_audit=false npm_config_fund=false npm_config_update_notifier=false \
    HUGETLB_RAS_DIR="${HUGETLB_RAS_DIR:-/mnt/hugetlb-ras}" "$@"
}
# No network: the namespace has the loopback interface only (nothing is sent anywhere to find out).
NETS="$(isolated node -e "console.log(require('node:fs').readFileSync('/proc/self/net/dev', 'utf8').split('\\n').slice(2).map((l) => l.split(':')[0].trim()).filter(Boolean).join(' '))")"
[ "$NETS" = lo ] || { say "FAIL: the namespace has network interfaces: $NETS"; exit 1; }
say "no network here (interfaces: $NETS)"

check_install() { # $1: a name, $2...: extra npm install flags
  local name="$1"; shift
  local dir="$WORK/$name"
  mkdir -p "$dir"
  echo '{ "name": "host", "private": true, "allowScripts": { "file:'"$TGZ"'": true } }' > "$dir/package.json"
  (cd "$dir" && isolated npm install "$@" "$TGZ") > "$WORK/$name.log" 2>&1 || { cat "$WORK/$name.log"; say "FAIL: npm install $* did not install"; exit 1; }
  if [ "$name" = plain ]; then grep -q 'using the prebuilt binary' "$WORK/$name.log" || { cat "$WORK/$name.log"; say "FAIL: the install step did not say it used the prebuilt binary"; exit 1; }; fi
  (cd "$dir" && isolated node -e "
    const ras = require('hugetlb-ras');
    const m = require('hugetlb-ras/metrics');
    if (typeof ras.RasEngine.open !== 'function' || typeof m.registerMetrics !== 'function') process.exit(1);
    const vmm = require(require('path').join(require.resolve('hugetlb-ras/package.json'), '..', 'dist/vmm/src/native.js'));
    vmm.vmmNative(); if (vmm.guestImage().length === 0) process.exit(1);
    console.log('offline-install: required the engine, the metrics entry and the reference VMM module');")
  (cd "$dir" && isolated node_modules/.bin/hugetlb-ras demo --threads 2) > "$WORK/$name-demo.log" 2>&1 || { cat "$WORK/$name-demo.log"; say "FAIL: the demo ($name)"; exit 1; }
  grep -q '^OK: every healthy byte is back' "$WORK/$name-demo.log" || { cat "$WORK/$name-demo.log"; say "FAIL: the demo did not say OK"; exit 1; }
  if [ -r /dev/kvm ] && [ -w /dev/kvm ]; then
    (cd "$dir" && isolated node_modules/.bin/hugetlb-ras-kvm-demo --vcpus 2) > "$WORK/$name-kvm.log" 2>&1 || { cat "$WORK/$name-kvm.log"; say "FAIL: the KVM demo ($name)"; exit 1; }
    grep -q 'result: every lost 4 KiB became exactly one machine check' "$WORK/$name-kvm.log" || { cat "$WORK/$name-kvm.log"; say "FAIL: the KVM demo"; exit 1; }
    say "$name: KVM demo ran"
  else
    (cd "$dir" && isolated node_modules/.bin/hugetlb-ras-kvm-demo) > "$WORK/$name-kvm.log" 2>&1 || { cat "$WORK/$name-kvm.log"; say "FAIL: the KVM demo ($name)"; exit 1; }
    say "$name: KVM demo skipped: no /dev/kvm on this machine ($(head -1 "$WORK/$name-kvm.log"))"
  fi
  say "$name: installed offline without a compiler, required, demo OK"
}

# npm 11 runs a dependency's install script only where the host's package.json allows it (for a
# tarball, its file: address): allowed here, so scripts/install.js
# decides (prebuilt or source); --ignore-scripts (and an npm that blocks it) load the prebuilt directly.
check_install plain
check_install ignore-scripts --ignore-scripts
mkdir -p "$WORK/from-source" && echo '{ "name": "host", "private": true, "allowScripts": { "file:'"$TGZ"'": true } }' > "$WORK/from-source/package.json"
if (cd "$WORK/from-source" && isolated npm install --build-from-source "$TGZ") > "$WORK/from-source.log" 2>&1; then
  say "FAIL: --build-from-source succeeded without a compiler: the check proves nothing"; exit 1
fi
say "control: --build-from-source fails here, as it must without a compiler ($(grep -m1 -E 'gyp ERR! (stack Error|find Python)|not found' "$WORK/from-source.log" | cut -c1-120 || echo 'see its log'))"
say "2 passed, 0 failed"
