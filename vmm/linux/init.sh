#!/bin/busybox sh
# /init of the reference VMM's Linux guest. No console device: everything goes to the kernel
# log (/dev/kmsg, printk.devkmsg=on), which the VMM's serial port carries.
/bin/busybox --install -s /bin
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
exec </dev/null >/dev/kmsg 2>&1
arg() { sed -n "s/.*walker\.$1=\([^ ]*\).*/\1/p" /proc/cmdline; }
echo "<4>init: user space up at $(cut -d' ' -f1 /proc/uptime) s, $(grep MemTotal /proc/meminfo | tr -s ' '), CPUs online $(grep -c ^processor /proc/cpuinfo)"
# Poll the machine-check banks every second: an action-optional (AMD deferred) report raises no
# #MC, the kernel finds it when it polls (default every 5 minutes).
for f in /sys/devices/system/machinecheck/machinecheck*/check_interval; do
  [ -f "$f" ] && echo 1 > "$f"
done
/walker "$(arg percent)" "$(arg interval)"
echo "<4>init: walker exited with $?"
sync
# Without ACPI, Linux turns poweroff into halt, which never leaves KVM with an in-kernel irqchip:
# reboot=k on the command line makes this the i8042 reset line the VMM ends on (as Firecracker).
reboot -f
