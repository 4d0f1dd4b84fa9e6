#!/bin/sh
# /init of the lab guest (busybox sh). Mounts the basics, reserves huge pages, loads
# hwpoison-inject, runs lab/guest/runner.js, powers off. Never waits for input.
/bin/busybox --install -s /bin
export PATH=/bin:/sbin:/usr/bin HOME=/root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
exec </dev/null

echo "lab: init on $(uname -r), cmdline: $(cat /proc/cmdline)"
# 2 MiB pool for the cases (the 1 GiB page comes from the kernel command line).
echo 96 > /sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages
mount -t hugetlbfs -o pagesize=2M none /mnt/huge2m
if [ -d /sys/kernel/mm/hugepages/hugepages-1048576kB ]; then
  mount -t hugetlbfs -o pagesize=1G none /mnt/huge1g
fi
if [ -f /lib/modules/hwpoison-inject.ko ]; then
  insmod /lib/modules/hwpoison-inject.ko || echo "lab: insmod hwpoison-inject failed"
fi

# KVM for the reference VMM's cases (kvm-amd: TCG shows SVM with nested paging), in dependency order.
if [ -f /lib/modules/kvm/order ]; then
  for m in $(cat /lib/modules/kvm/order); do
    insmod "/lib/modules/kvm/$m.ko" || echo "lab: insmod $m failed"
  done
  [ -c /dev/kvm ] && echo "lab: /dev/kvm ready" || echo "lab: no /dev/kvm after loading KVM"
fi
# Two idle VMs held for the run: KVM's static keys stay on (lab/lib/kvm-hold.c).
HOLD=
if [ -c /dev/kvm ] && [ -x /usr/bin/kvm-hold ]; then
  /usr/bin/kvm-hold &
  HOLD=$!
fi

/usr/bin/node /pkg/lab/guest/runner.js
echo "lab: runner exited with $?"
[ -n "$HOLD" ] && kill "$HOLD" 2>/dev/null
sync
sleep 1
poweroff -f
