# shellcheck shell=bash
# Kernel selection, download (apt-get download) and unpacking, cached under lab/cache/.
#
# A kernel is named by major.minor (LAB_KERNELS). Its build number is read from Debian's
# package lists at run time: the newest linux-image-<major.minor>...-amd64 of its suite
# (never -cloud-amd64, which has no CONFIG_MEMORY_FAILURE; never -rt).

# major.minor -> Debian suite
kernel_suite() {
  case "$1" in
    6.1) echo bookworm ;;
    6.12) echo trixie ;;
    *) return 1 ;;
  esac
}

# The suite the machine's own sources.list already has (no private lists needed).
system_suite() {
  local s
  s="$(. /etc/os-release 2>/dev/null; echo "${VERSION_CODENAME:-}")"
  echo "${s:-bookworm}"
}

# All URIs the machine's APT sources name (one-line and deb822 formats).
system_apt_uris() {
  local f
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    awk '$1 == "deb" { for (i = 2; i <= NF; i++) { if ($i ~ /^\[/) { while ($i !~ /\]$/ && i < NF) i++; continue } print $i; break } }' "$f"
  done
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk 'tolower($1) == "uris:" { for (i = 2; i <= NF; i++) print $i }' "$f"
  done
}

# Mirror of the Debian archive and of the security archive, as the machine names them.
debian_mirror() {
  local u
  u="$(system_apt_uris | grep -E '^(https?|ftp)://[^ ]*/debian/?$' | head -1 || true)"
  u="${u%/}"
  echo "${u:-http://deb.debian.org/debian}"
}
debian_security_mirror() {
  local u
  u="$(system_apt_uris | grep -E '^(https?|ftp)://[^ ]*/debian-security/?$' | head -1 || true)"
  if [ -z "$u" ]; then
    u="$(debian_mirror)"; u="${u%/debian}/debian-security"
  fi
  echo "${u%/}"
}

# Options that make apt-get/apt-cache use private lists for SUITE (empty for the system suite).
APT_PRIVATE_OPTS=()
apt_opts_for_suite() {
  local suite="$1"
  APT_PRIVATE_OPTS=()
  [ "$suite" = "$(system_suite)" ] && return 0
  local d="$CACHE/apt/$suite"
  mkdir -p "$d/lists/partial" "$d/cache/archives/partial"
  local main sec keyring=/usr/share/keyrings/debian-archive-keyring.gpg signed=""
  main="$(debian_mirror)"; sec="$(debian_security_mirror)"
  [ -f "$keyring" ] && signed="[signed-by=$keyring] "
  cat >"$d/sources.list.new" <<EOF
deb ${signed}$main $suite main
deb ${signed}$main $suite-updates main
deb ${signed}$sec $suite-security main
EOF
  if ! cmp -s "$d/sources.list.new" "$d/sources.list" 2>/dev/null; then
    mv "$d/sources.list.new" "$d/sources.list"
    rm -f "$d/lists/"*Packages* 2>/dev/null || true
  else
    rm -f "$d/sources.list.new"
  fi
  APT_PRIVATE_OPTS=(
    -o "Dir::Etc::sourcelist=$d/sources.list"
    -o "Dir::Etc::sourceparts=-"
    -o "Dir::State::Lists=$d/lists"
    -o "Dir::Cache=$d/cache"
    -o "APT::Get::List-Cleanup=0"
  )
}

# Refresh package lists: private ones when missing, older than a day or LAB_REFRESH=1;
# the system's only when forced ($2 = force).
refresh_lists() {
  local suite="$1" force="${2:-}"
  if [ ${#APT_PRIVATE_OPTS[@]} -eq 0 ]; then
    [ -n "$force" ] && { apt_update_once || return 1; }
    return 0
  fi
  local d="$CACHE/apt/$suite"
  if [ -n "$force" ] || [ "${LAB_REFRESH:-0}" = 1 ] || ! ls "$d/lists/"*_Packages* >/dev/null 2>&1 \
     || [ -n "$(find "$d/lists" -maxdepth 1 -name '*_Packages*' -mmin +1440 | head -1)" ]; then
    log "apt-get update ($suite, private lists in ${d#"$ROOT"/})"
    apt-get "${APT_PRIVATE_OPTS[@]}" update -q >"$OUT/apt-update-$suite.log" 2>&1 \
      || { tail -5 "$OUT/apt-update-$suite.log" >&2; return 1; }
  fi
}

# Newest linux-image package for major.minor MM in the current lists: prints "name version".
newest_kernel_package() {
  local mm="$1" re names
  re="^linux-image-${mm//./\\.}[.-][0-9.-]*(\\+deb[0-9]+)?-amd64\$"
  names="$(apt-cache "${APT_PRIVATE_OPTS[@]}" search --names-only "$re" 2>/dev/null | awk '{print $1}' | grep -Ev -- '-(cloud|rt)-amd64$' || true)"
  [ -n "$names" ] || return 1
  # One apt-cache call for all candidates; keep the highest candidate version.
  # shellcheck disable=SC2086
  apt-cache "${APT_PRIVATE_OPTS[@]}" policy $names 2>/dev/null | awk '
    /^[^ ].*:$/ { name = substr($0, 1, length($0) - 1) }
    /^  Candidate:/ { if ($2 != "(none)") print name, $2 }' | {
    local best_n="" best_v="" n v
    while read -r n v; do
      if [ -z "$best_v" ] || dpkg --compare-versions "$v" gt "$best_v"; then best_n="$n"; best_v="$v"; fi
    done
    [ -n "$best_n" ] || exit 1
    echo "$best_n $best_v"
  }
}

# Unpack vmlinuz, config and hwpoison-inject.ko from DEB into DIR.
unpack_kernel_deb() {
  local deb="$1" dir="$2" tmp
  tmp="$(mktemp -d "$CACHE/unpack.XXXXXX")"
  dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$tmp" --wildcards \
    '*boot/vmlinuz-*' '*boot/config-*' '*/kernel/mm/hwpoison-inject.ko*' || { rm -rf "$tmp"; return 1; }
  mkdir -p "$dir.tmp"
  cp "$(find "$tmp" -path '*boot/vmlinuz-*' | head -1)" "$dir.tmp/vmlinuz"
  cp "$(find "$tmp" -path '*boot/config-*' | head -1)" "$dir.tmp/config"
  local ko
  ko="$(find "$tmp" -name 'hwpoison-inject.ko*' | head -1)"
  case "$ko" in
    *.ko) cp "$ko" "$dir.tmp/hwpoison-inject.ko" ;;
    *.ko.xz) xz -dc "$ko" >"$dir.tmp/hwpoison-inject.ko" ;;
    *.ko.zst) zstd -qdc "$ko" >"$dir.tmp/hwpoison-inject.ko" ;;
    *.ko.gz) gzip -dc "$ko" >"$dir.tmp/hwpoison-inject.ko" ;;
    "") log "warning: $deb has no hwpoison-inject module" ;;
  esac
  basename "$(find "$tmp" -path '*boot/vmlinuz-*' | head -1)" | sed 's/^vmlinuz-//' >"$dir.tmp/release"
  rm -rf "$tmp" "$dir"
  mv "$dir.tmp" "$dir"
  grep -q '^CONFIG_MEMORY_FAILURE=y' "$dir/config" \
    || log "warning: $(cat "$dir/release") has no CONFIG_MEMORY_FAILURE=y: MADV_HWPOISON will not work"
}

# KVM for the reference VMM's lab cases: kvm-amd (TCG's -cpu max is AuthenticAMD with SVM and
# nested paging) and every module it needs, from the same .deb, decompressed, into DIR/kvm/ with
# DIR/kvm/order listing them in insmod order (dependencies first, read from each .modinfo).
modinfo_depends() { # modinfo_depends FILE.ko -> names, one a line
  objcopy -O binary --only-section=.modinfo "$1" /dev/stdout 2>/dev/null | tr '\0' '\n' \
    | sed -n 's/^depends=//p' | tr ',' '\n' | sed '/^$/d'
}
unpack_kvm_modules() {
  local deb="$1" dir="$2" tmp out="$2/kvm.tmp" want name ko pass
  tmp="$(mktemp -d "$CACHE/unpack.XXXXXX")"
  rm -rf "$out"; mkdir -p "$out"
  want="kvm-amd"
  for pass in 1 2 3 4 5; do
    local pats=() missing=()
    for name in $want; do
      [ -f "$out/$name.ko" ] && continue
      missing+=("$name")
      pats+=("*/kernel/*/$name.ko*")
      # module names use _ and - interchangeably
      [ "${name//_/-}" != "$name" ] && pats+=("*/kernel/*/${name//_/-}.ko*")
    done
    [ ${#missing[@]} -eq 0 ] && break
    dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$tmp" --wildcards "${pats[@]}" 2>/dev/null || true
    for name in "${missing[@]}"; do
      ko="$(find "$tmp" \( -name "$name.ko*" -o -name "${name//_/-}.ko*" \) | head -1)"
      [ -n "$ko" ] || { err "kvm modules: $name not in $(basename "$deb")"; rm -rf "$tmp" "$out"; return 1; }
      case "$ko" in
        *.ko.xz) xz -dc "$ko" >"$out/$name.ko" ;;
        *.ko.zst) zstd -qdc "$ko" >"$out/$name.ko" ;;
        *.ko.gz) gzip -dc "$ko" >"$out/$name.ko" ;;
        *) cp "$ko" "$out/$name.ko" ;;
      esac
    done
    want=""
    for ko in "$out"/*.ko; do want+=" $(modinfo_depends "$ko" | tr '\n' ' ')"; done
  done
  # insmod order: a module after everything it depends on
  local order=() placed progress
  while :; do
    progress=0
    for ko in "$out"/*.ko; do
      name="$(basename "$ko" .ko)"
      case " ${order[*]} " in *" $name "*) continue ;; esac
      placed=1
      for d in $(modinfo_depends "$ko"); do
        case " ${order[*]} " in *" $d "*|*" ${d//_/-} "*) ;; *) placed=0 ;; esac
      done
      [ "$placed" = 1 ] && { order+=("$name"); progress=1; }
    done
    [ "$progress" = 0 ] && break
  done
  printf '%s\n' "${order[@]}" >"$out/order"
  rm -rf "$tmp" "$dir/kvm"
  mv "$out" "$dir/kvm"
  log "kvm modules: $(tr '\n' ' ' <"$dir/kvm/order")"
}

# Sets KDIR (vmlinuz, hwpoison-inject.ko, config, release, package) for major.minor $1.
prepare_kernel() {
  local mm="$1" suite name ver pv deb
  suite="$(kernel_suite "$mm")" || { err "kernel $mm: unknown (known: 6.1 bookworm, 6.12 trixie)"; return 1; }
  apt_opts_for_suite "$suite"
  mkdir -p "$CACHE/debs" "$CACHE/kernels/$mm"

  pv=""
  if refresh_lists "$suite"; then
    pv="$(newest_kernel_package "$mm" || true)"
    if [ -z "$pv" ]; then
      refresh_lists "$suite" force || true
      pv="$(newest_kernel_package "$mm" || true)"
    fi
  fi
  if [ -z "$pv" ]; then
    # Offline or lists unusable: reuse the newest cached kernel of this major.minor.
    KDIR="$(ls -d "$CACHE/kernels/$mm"/*/ 2>/dev/null | sort -V | tail -1)"
    KDIR="${KDIR%/}"
    if [ -z "$KDIR" ] || [ ! -f "$KDIR/vmlinuz" ]; then
      err "kernel $mm: no package in the $suite lists and nothing cached"; return 1
    fi
    log "kernel $mm: package lists unavailable, reusing cached $(basename "$KDIR")"
    return 0
  fi
  name="${pv% *}"; ver="${pv#* }"
  KDIR="$CACHE/kernels/$mm/${name}_${ver}"
  if [ -f "$KDIR/vmlinuz" ] && [ -f "$KDIR/release" ]; then
    log "kernel $mm: $name $ver (cached)"
    if [ ! -f "$KDIR/kvm/order" ]; then
      deb="$(ls "$CACHE/debs/${name}_${ver//:/%3a}_"*.deb 2>/dev/null | head -1 || true)"
      [ -n "$deb" ] && unpack_kvm_modules "$deb" "$KDIR" || log "warning: kernel $mm: no KVM modules (cached kernel without its .deb)"
    fi
    return 0
  fi
  deb="$(ls "$CACHE/debs/${name}_${ver//:/%3a}_"*.deb 2>/dev/null | head -1 || true)"
  if [ -z "$deb" ] || ! dpkg-deb -I "$deb" >/dev/null 2>&1; then
    rm -f "$deb"
    log "kernel $mm: downloading $name $ver ($suite)"
    if ! (cd "$CACHE/debs" && apt-get "${APT_PRIVATE_OPTS[@]}" download -q "$name=$ver" >"$OUT/apt-download-$mm.log" 2>&1); then
      # Lists may be stale (the version was superseded): refresh once and retry.
      refresh_lists "$suite" force || true
      pv="$(newest_kernel_package "$mm" || true)"
      [ -n "$pv" ] || { tail -5 "$OUT/apt-download-$mm.log" >&2; return 1; }
      name="${pv% *}"; ver="${pv#* }"
      KDIR="$CACHE/kernels/$mm/${name}_${ver}"
      (cd "$CACHE/debs" && apt-get "${APT_PRIVATE_OPTS[@]}" download -q "$name=$ver" >"$OUT/apt-download-$mm.log" 2>&1) \
        || { tail -5 "$OUT/apt-download-$mm.log" >&2; return 1; }
    fi
    deb="$(ls "$CACHE/debs/${name}_${ver//:/%3a}_"*.deb 2>/dev/null | head -1 || true)"
    [ -n "$deb" ] || { err "kernel $mm: apt-get download left no .deb"; return 1; }
  fi
  log "kernel $mm: unpacking $(basename "$deb")"
  unpack_kernel_deb "$deb" "$KDIR" || { err "kernel $mm: cannot unpack $deb"; return 1; }
  echo "$name $ver" >"$KDIR/package"
  unpack_kvm_modules "$deb" "$KDIR" || log "warning: kernel $mm: no KVM modules: the reference VMM cases will fail"
  # Keep the cache bounded: drop older builds of the same major.minor.
  local old
  for old in "$CACHE/kernels/$mm"/*/; do
    old="${old%/}"; [ "$old" = "$KDIR" ] && continue
    rm -rf "$old"
    rm -f "$CACHE/debs/$(basename "$old")_"*.deb
  done
  return 0
}
