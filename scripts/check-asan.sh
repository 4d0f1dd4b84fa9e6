#!/usr/bin/env bash
# Memory checking of the native addon (see docs/CHECKING.md).
#
#   scripts/check-asan.sh [vitest args...]       the vitest suite twice: against the addon built with
#                                                AddressSanitizer, then with UndefinedBehaviorSanitizer
#   scripts/check-asan.sh --asan [vitest args]   only the AddressSanitizer pass
#   scripts/check-asan.sh --ubsan [vitest args]  only the UBSan pass
#   scripts/check-asan.sh --valgrind             valgrind memcheck over a signal-free exercise of the addon
#
# Each pass rebuilds the addon in this tree with the sanitizer switch of common.gypi
# (`node-gyp configure -- -Dsanitize=...`), and the ordinary Release build is put back when the script
# ends, however it ends. So do not build or test in this tree while it runs. Logs and sanitizer
# reports go to a temporary directory. The exit status is non-zero on any sanitizer or valgrind
# report and on any test failure.
#
# Environment: CHECK_KEEP=1 keeps the temporary directory (it is always kept on failure, for the
# logs); CHECK_TMPDIR (default /tmp) is where it goes; CXX (default g++) finds libasan.
# As root the tests get hugetlbfs mounts of their own under the temporary directory (same huge page pool),
# so files left by a process a sanitizer killed go with the unmount, and the mount dirs of somebody
# testing at the same time are not touched. Not as root (or with CHECK_PRIVATE_MOUNT=0) they use
# HUGETLB_RAS_DIR (default /mnt/hugetlb-ras), prepared beforehand by scripts/setup-hugetlbfs.sh.
#
# Why two passes and not one -fsanitize=address,undefined build: with the ASan runtime loaded, GCC's
# UBSan ignores log_path and only writes to stderr, and a test that runs a child process captures
# (and may drop) the child's stderr. Alone, UBSan writes every report of every process to a file.
set -euo pipefail

passes=(asan ubsan)
case "${1:-}" in
  --valgrind) passes=(valgrind); shift ;;
  --asan) passes=(asan); shift ;;
  --ubsan) passes=(ubsan); shift ;;
esac
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ ! -d "$root/node_modules/node-addon-api" ] || [ ! -d "$root/node_modules/vitest" ]; then
  echo "check-asan: no node_modules in $root: run npm install there first" >&2
  exit 2
fi

work=$(mktemp -d "${CHECK_TMPDIR:-/tmp}/hugetlb-ras-check.XXXXXX")
status=1
huge_files=()
private_mnt=
rebuilt=0
cleanup() {
  local f m
  if [ "$rebuilt" = 1 ]; then
    log "putting the ordinary Release build back"
    (cd "$root" && npx --no-install node-gyp configure >"$work/restore.log" 2>&1 &&
      npx --no-install node-gyp build >>"$work/restore.log" 2>&1) || { log "restoring the build failed: see $work/restore.log"; status=1; }
  fi
  for f in "${huge_files[@]+"${huge_files[@]}"}"; do rm -f "$f"; done
  if [ -n "$private_mnt" ]; then
    for m in "$private_mnt/2M" "$private_mnt/1G"; do
      if grep -qs " $m hugetlbfs " /proc/mounts; then umount "$m" 2>/dev/null || umount -l "$m"; fi
    done
  fi
  if [ "$status" -eq 0 ] && [ "${CHECK_KEEP:-0}" != 1 ]; then
    rm -rf "$work"
  else
    echo "check-asan: the logs are in $work" >&2
  fi
}
trap cleanup EXIT
log() { echo "check-asan: $*" >&2; }
started=$SECONDS

# The addon of this tree rebuilt for pass $1 (common.gypi: -Dsanitize=<list>, or -Dsymbols=1 for
# valgrind), and dist/ compiled. Leaves the shell in $work/$1 (logs, reports); the tests run in $root.
build_pass() {
  local pass=$1 defines
  mkdir -p "$work/$pass"
  case $pass in
    asan) defines=(-Dsanitize=address) ;;
    ubsan) defines=(-Dsanitize=undefined,float-cast-overflow,float-divide-by-zero) ;;
    *) defines=(-Dsymbols=1) ;;
  esac
  # `bindings` prefers build/Debug: there must be none, only the build made here.
  if [ -e "$root/build/Debug" ]; then
    log "$root/build/Debug exists: bindings would load it instead of the $pass build (remove it first)"
    exit 1
  fi
  log "rebuilding the addon for $pass in $root (${defines[*]})"
  rebuilt=1
  # npx: node-gyp gets npm's configuration (e.g. nodedir) as it does for npm install.
  if ! (cd "$root" && npx --no-install node-gyp configure -- "${defines[@]}" && npx --no-install node-gyp build) \
    >"$work/$pass/build.log" 2>&1; then
    tail -40 "$work/$pass/build.log" >&2
    log "build failed ($pass)"
    exit 1
  fi
  addon=$root/build/Release/hugetlb_ras.node
  local syms want
  syms=$(nm -D "$addon")
  case $pass in asan) want=__asan_report ;; ubsan) want=__ubsan_handle ;; *) want= ;; esac
  if [ -n "$want" ] && ! grep -q "$want" <<<"$syms"; then
    log "the addon is not instrumented (no $want symbols): the sanitizer switch was not used"
    exit 1
  fi
  if ! (cd "$root" && node node_modules/typescript/bin/tsc -p tsconfig.json) >&2; then
    log "tsc failed ($pass)"
    exit 1
  fi
  cd "$work/$pass"
}

if [ "$(id -u)" -eq 0 ] && [ "${CHECK_PRIVATE_MOUNT:-1}" != 0 ]; then
  private_mnt=$work/mnt
  export HUGETLB_RAS_DIR=$private_mnt
fi
bash "$root/scripts/setup-hugetlbfs.sh" >&2

# Loads the addon the way the tests do and checks that it is this copy's build.
check_loaded='
  require("./dist/src/native.js");
  const maps = require("fs").readFileSync("/proc/self/maps", "utf8");
  if (!maps.includes(process.argv[1])) { console.error("loaded another hugetlb_ras.node than " + process.argv[1]); process.exit(1); }'

# One sanitizer pass over the vitest suite; every process the tests start (vitest forks, runChild)
# inherits the environment and is checked too. Sets failed=1 on any report or test failure.
failed=0
sanitizer_pass() {
  local pass=$1 rc files inline
  shift
  build_pass "$pass"
  mkdir -p sanitizer
  if (
    if [ "$pass" = asan ]; then
      libasan=$(readlink -f "$(${CXX:-g++} -print-file-name=libasan.so)")
      [ -f "$libasan" ] || { log "no libasan.so from ${CXX:-g++} -print-file-name=libasan.so"; exit 3; }
      # node is not instrumented: the ASan runtime must come first. Node leaks by design (no leak
      # check); the engine owns SIGSEGV and SIGBUS: ASan must neither take them over nor refuse ours.
      export LD_PRELOAD=$libasan
      export ASAN_OPTIONS="detect_leaks=0:handle_segv=0:handle_sigbus=0:allow_user_segv_handler=1:log_path=$PWD/sanitizer/asan"
    else
      # Go on after a report (every report is in a file; the suite still fails at the end).
      export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=0:log_path=$PWD/sanitizer/ubsan"
    fi
    cd "$root"
    node -e "$check_loaded" "$addon" || exit 4
    log "running vitest with $pass${LD_PRELOAD:+ (LD_PRELOAD=$LD_PRELOAD)}"
    node node_modules/vitest/vitest.mjs run "$@"
  ) 2>&1 | tee vitest.log; then
    rc=0
  else
    rc=$?
  fi
  files=$(find sanitizer -type f -size +0c | wc -l)
  inline=$(grep -c -E 'ERROR: AddressSanitizer|runtime error:' vitest.log || true)
  for f in sanitizer/*; do
    if [ -s "$f" ]; then
      echo "==== $PWD/$f" >&2
      cat "$f" >&2
    fi
  done
  log "$pass: vitest exit $rc; report files: $files; reports in the test output: $inline; $((SECONDS - started)) s so far"
  if [ "$rc" -ne 0 ] || [ "$files" -gt 0 ] || [ "$inline" -gt 0 ]; then failed=1; fi
}

if [ "${passes[0]}" != valgrind ]; then
  for pass in "${passes[@]}"; do sanitizer_pass "$pass" "$@"; done
  if [ "$failed" -ne 0 ]; then
    log "FAILED"
    exit 1
  fi
  status=0
  log "clean (${passes[*]}): $((SECONDS - started)) s"
  exit 0
fi

# --- valgrind memcheck: a signal-free exercise -------------------------------------------------------------
# The simulated poison is a SIGBUS (si_code BUS_MCEERR_AR) the process sends itself from a syscall;
# valgrind takes any kernel-looking synchronous signal that arrives while it runs a syscall for a fault
# of its own and dies ("VALGRIND INTERNAL ERROR: Valgrind received a signal 7 (SIGBUS)"). So the
# poison is made in a plain node run that journals it, and the valgrind run recovers from the journal
# (recoverNow, markLost: the read-back, guard and swap-in of a split) without any signal.
command -v valgrind >/dev/null || {
  log "valgrind is not installed"
  exit 2
}
build_pass valgrind
export CHECK_ROOT=$root
dir=${HUGETLB_RAS_DIR:-/mnt/hugetlb-ras}/2M
mkdir -p valgrind
fa=$dir/check-valgrind-$$-a
fb=$dir/check-valgrind-$$-b
fc=$dir/check-valgrind-$$-c
huge_files=("$fa" "$fb" "$fc")
cat >valgrind/prepare.js <<'JS'
// Plain node: a region with a pattern and a simulated poison recovered (one lost 4 KiB frame), and
// a share=on region whose poison is refused (a whole huge page lost), both in a journal.
const ras = require(process.env.CHECK_ROOT + '/dist/src/index.js');
const [journal, fileA, fileB] = process.argv.slice(2);
const e = ras.RasEngine.open({ reserveBytes: 0, journalPath: journal });
const a = e.mapRegion({ name: 'a', path: fileA, size: 4 << 20 });
const b = e.mapRegion({ name: 'b', path: fileB, size: 2 << 20, guestPhysAddr: 1n << 32n, share: true });
ras.fillPattern(a, 7);
ras.fillPattern(b, 8);
e.injectPoison(a, (2 << 20) + 0x3000, { mode: 'simulate' });
e.injectPoison(b, 0x1000, { mode: 'simulate' });
e.whenIdle({ timeoutMs: 30000 }).then(() => {
  console.log('prepared', JSON.stringify(e.lostPages().map((l) => [l.region, l.offset, l.size, l.cause])));
  e.close();
});
JS
cat >valgrind/exercise.js <<'JS'
// Under valgrind: every addon call that needs no signal. Restart from the journal (recoverNow,
// markLost), guarded read/write of healthy memory, fill and verify, stats and THP share, a short
// vCPU load, reset (punch hole, fresh huge page), unmap, double close.
const assert = require('assert');
const ras = require(process.env.CHECK_ROOT + '/dist/src/index.js');
const [journal, fileA, fileB, fileC, addon] = process.argv.slice(2);
assert.ok(require('fs').readFileSync('/proc/self/maps', 'utf8').includes(addon), 'not the addon of this copy');
const MiB = 1 << 20;
const e = ras.RasEngine.open({ reserveBytes: 2 * MiB, journalPath: journal });
const a = e.mapRegion({ name: 'a', path: fileA, size: 4 * MiB });
const b = e.mapRegion({ name: 'b', path: fileB, size: 2 * MiB, guestPhysAddr: 1n << 32n, share: true });
assert.deepStrictEqual(e.lostPages().map((l) => [l.region, l.offset, l.size]), [['a', 2 * MiB + 0x3000, 4096], ['b', 0, 2 * MiB]]);
const c = e.mapRegion({ name: 'c', path: fileC, size: 4 * MiB, guestPhysAddr: 1n << 33n });
ras.fillPattern(c, 7); // the same pattern as a: the reference for a's healthy bytes
for (const [off, len] of [[0, 4096], [2 * MiB, 0x3000], [2 * MiB + 0x4000, 8192], [4 * MiB - 64, 64]])
  assert.ok(a.read(off, len).equals(c.read(off, len)), `a at ${off}`);
a.write(2 * MiB + 0x5000, Buffer.alloc(100, 0xab));
assert.ok(a.read(2 * MiB + 0x5000, 100).equals(Buffer.alloc(100, 0xab)));
assert.strictEqual(ras.verifyPattern(c, 7).wrongBytes, 0);
assert.strictEqual(e.stats().regions.length, 3);
e.hugeMappedShare(a, 1);
const load = ras.startVcpuLoad(e, { region: c, threads: 2, seed: 7, window: { offset: 0, length: 64 * 1024 } });
setTimeout(async () => {
  const rep = await load.stop();
  assert.strictEqual(rep.wrongBytes, 0);
  assert.strictEqual((await e.resetRegion(a)).restoredHugePages, 1);
  assert.strictEqual((await e.resetRegion(b)).restoredHugePages, 1);
  assert.deepStrictEqual(e.lostPages(), []);
  assert.strictEqual(ras.verifyPattern(a, 7).unreadableOffsets.length, 0);
  e.unmapRegion(c);
  e.close();
  e.close();
  console.log(`exercise ok (${rep.accesses} vCPU accesses)`);
}, 500);
JS
node valgrind/prepare.js valgrind/journal "$fa" "$fb"
log "running the exercise under valgrind memcheck (slow: ~20 s)"
set +e
# --smc-check=all-non-file: V8 writes and rewrites machine code (JIT). --fair-sched: the spinning
# vCPU threads would otherwise keep the JS thread (and its timer) waiting. Only definite leaks count:
# node keeps (and "possibly" loses) memory by design.
valgrind --tool=memcheck --error-exitcode=99 --smc-check=all-non-file --fair-sched=yes --num-callers=40 \
  --leak-check=full --show-leak-kinds=definite --errors-for-leak-kinds=definite \
  node valgrind/exercise.js valgrind/journal "$fa" "$fb" "$fc" "$addon" >valgrind/valgrind.log 2>&1
rc=$?
set -e
grep -E 'exercise ok|ERROR SUMMARY|definitely lost|Invalid|uninitialised|INTERNAL ERROR|AssertionError' valgrind/valgrind.log >&2 || true
log "valgrind exit $rc; $((SECONDS - started)) s; full log: $work/valgrind/valgrind.log"
if [ "$rc" -ne 0 ] || ! grep -q 'exercise ok' valgrind/valgrind.log || ! grep -q 'ERROR SUMMARY: 0 errors' valgrind/valgrind.log; then exit 1; fi
status=0
log "clean"
