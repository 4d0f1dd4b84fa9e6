#!/usr/bin/env bash
# Prepares hugetlbfs for hugetlb-ras: reserves huge pages and mounts one hugetlbfs per page size
# under $HUGETLB_RAS_DIR (default /mnt/hugetlb-ras): 2M always, 1G where the kernel gives 1 GiB pages.
# Idempotent. As root it does the work; otherwise it checks and prints exactly what to run.
set -euo pipefail
dir=${HUGETLB_RAS_DIR:-/mnt/hugetlb-ras}
want_2m=${HUGETLB_RAS_PAGES_2M:-512}
want_1g=${HUGETLB_RAS_PAGES_1G:-3}
sys=/sys/kernel/mm/hugepages

mounted() { grep -qs " $1 hugetlbfs " /proc/mounts; }
count() { cat "$sys/hugepages-$1/nr_hugepages" 2>/dev/null || echo 0; }

if [ "$(id -u)" -ne 0 ]; then
  if mounted "$dir/2M" && [ "$(count 2048kB)" -gt 0 ]; then
    echo "hugetlbfs: $dir/2M is mounted ($(count 2048kB) pages of 2 MiB); not root, leaving it as it is"
    exit 0
  fi
  # Each echo only raises the pool (as this script does as root): a bigger pool is left as it is.
  cat >&2 <<MSG
hugetlbfs is not prepared and this is not root. Run as root (or run this script as root):
  [ "\$(cat $sys/hugepages-2048kB/nr_hugepages)" -ge $want_2m ] || echo $want_2m > $sys/hugepages-2048kB/nr_hugepages
  mkdir -p $dir/2M && mount -t hugetlbfs -o pagesize=2M,mode=1777 none $dir/2M
  # optional, for 1 GiB pages:
  [ "\$(cat $sys/hugepages-1048576kB/nr_hugepages)" -ge $want_1g ] || echo $want_1g > $sys/hugepages-1048576kB/nr_hugepages
  mkdir -p $dir/1G && mount -t hugetlbfs -o pagesize=1G,mode=1777 none $dir/1G
MSG
  exit 1
fi

[ -d "$sys/hugepages-2048kB" ] || { echo "this kernel has no 2 MiB huge pages" >&2; exit 1; }
if [ "$(count 2048kB)" -lt "$want_2m" ]; then echo "$want_2m" > "$sys/hugepages-2048kB/nr_hugepages"; fi
mkdir -p "$dir/2M"
mounted "$dir/2M" || mount -t hugetlbfs -o pagesize=2M,mode=1777 none "$dir/2M"

have_1g=0
if [ -d "$sys/hugepages-1048576kB" ]; then
  if [ "$(count 1048576kB)" -lt "$want_1g" ]; then echo "$want_1g" > "$sys/hugepages-1048576kB/nr_hugepages" 2>/dev/null || true; fi
  have_1g=$(count 1048576kB)
  if [ "$have_1g" -gt 0 ]; then
    mkdir -p "$dir/1G"
    mounted "$dir/1G" || mount -t hugetlbfs -o pagesize=1G,mode=1777 none "$dir/1G"
  fi
fi
echo "hugetlbfs: $dir/2M with $(count 2048kB) pages of 2 MiB; 1 GiB pages: $have_1g$([ "$have_1g" -gt 0 ] && echo " at $dir/1G")"
