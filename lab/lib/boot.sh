# shellcheck shell=bash
# Boots one kernel under qemu (TCG) with a hard time limit. Guest console (ttyS0) goes to
# out/<k>/console.log; the machine-readable result lines (ttyS1) to out/<k>/results.log.

boot_kernel() {
  local mm="$1" d="$OUT/$1" t0=$SECONDS
  local release pkg
  release="$(cat "$KDIR/release")"
  pkg="$(cat "$KDIR/package" 2>/dev/null || basename "$KDIR")"
  : >"$d/console.log"; : >"$d/results.log"
  local append="console=ttyS0 loglevel=4 panic=-1 mitigations=off hugepagesz=1G hugepages=${LAB_HUGEPAGES_1G:-7}"
  append+=" lab.kernel=$mm lab.timeout=$((LAB_TIMEOUT - 15)) lab.case_timeout=$LAB_CASE_TIMEOUT"
  [ -n "$LAB_CASES" ] && append+=" lab.cases=$LAB_CASES"
  log "kernel $mm: booting $release ($pkg), limit ${LAB_TIMEOUT}s"
  timeout --kill-after=10 "$LAB_TIMEOUT" "$QEMU" \
    -nodefaults -no-user-config -display none -monitor none \
    -accel "${LAB_ACCEL:-tcg,thread=single}" -cpu max -smp 2 -m "$LAB_MEM" -no-reboot \
    -kernel "$KDIR/vmlinuz" -initrd "$d/initrd.cpio" -append "$append" \
    -serial "file:$d/console.log" -serial "file:$d/results.log" \
    </dev/null >"$d/qemu.log" 2>&1 &
  local pid=$! seen=0
  while kill -0 "$pid" 2>/dev/null; do
    sleep 2
    seen=$(progress_lines "$mm" "$d/results.log" "$seen")
  done
  local rc=0
  wait "$pid" || rc=$?
  seen=$(progress_lines "$mm" "$d/results.log" "$seen")
  local secs=$((SECONDS - t0)) timed_out=false
  [ "$rc" = 124 ] || [ "$rc" = 137 ] && timed_out=true
  printf '{"kernel":"%s","release":"%s","package":"%s","qemuExit":%d,"timedOut":%s,"seconds":%d,"timeout":%d}\n' \
    "$mm" "$release" "$pkg" "$rc" "$timed_out" "$secs" "$LAB_TIMEOUT" >"$d/meta.json"
  log "kernel $mm: qemu exited ($rc) after ${secs}s"
  [ "${LAB_VERBOSE:-0}" = 1 ] && { echo "----- console $mm -----"; tr -d '\r' <"$d/console.log"; echo "-----"; }
  return 0
}

# Prints one progress line per new LAB-RESULT line (to stderr); echoes the new count.
progress_lines() {
  local mm="$1" f="$2" seen="$3" n line id st ms
  n=$(grep -c '^LAB-RESULT ' "$f" 2>/dev/null || true)
  if [ "${n:-0}" -gt "$seen" ]; then
    grep '^LAB-RESULT ' "$f" | tail -n +"$((seen + 1))" | head -n "$((n - seen))" | while IFS= read -r line; do
      id=$(printf '%s' "$line" | grep -o '"id":"[^"]*"' | head -1 | cut -d'"' -f4)
      st=$(printf '%s' "$line" | grep -o '"status":"[^"]*"' | head -1 | cut -d'"' -f4)
      ms=$(printf '%s' "$line" | grep -o '"ms":[0-9]*' | head -1 | cut -d: -f2)
      printf '[lab %s]   %s case %s: %s (%s s)\n' "$(date +%H:%M:%S)" "$mm" "$id" "$st" "$(( ${ms:-0} / 1000 ))" >&2
    done
  fi
  echo "${n:-0}"
}

write_failed_result() {
  local mm="$1" msg="$2"
  mkdir -p "$OUT/$mm"
  : >"$OUT/$mm/results.log"; : >"$OUT/$mm/console.log"
  printf '{"kernel":"%s","error":"%s","qemuExit":-1,"timedOut":false,"seconds":0}\n' "$mm" "$msg" >"$OUT/$mm/meta.json"
}

# True when the boot of kernel $1 never said LAB-DONE and its console shows the kernel itself
# crashing (panic, Oops, BUG): the run was cut short by the lab, not by a case.
lab_kernel_crashed() {
  local d="$OUT/$1"
  grep -q 'LAB-DONE ' "$d/results.log" "$d/console.log" 2>/dev/null && return 1
  grep -Eq 'Kernel panic|Oops:|BUG: |general protection fault|corrupted stack end' "$d/console.log" 2>/dev/null
}

crash_line() {
  grep -Eo -m1 '(Kernel panic|Oops:|BUG: |general protection fault|corrupted stack end).{0,80}' "$OUT/$1/console.log" 2>/dev/null | head -1
}
