#!/bin/busybox sh
# boxbuild's minimal initrd: load the box modules, mount root=, switch_root into init=.
# No udev, no systemd: the agent on the root disk does the rest.
# The end of each phase, in seconds since the kernel started, goes to init in
# BOXBUILD_BOOT_MARKS ("NAME=SECONDS ..."), which the agent reports to the host for -v.
# The applets it runs are linked in /bin when the initrd is made (make_initrd).
mount -t proc proc /proc
read up _ </proc/uptime; marks="kernel=$up"
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in $(cat /modules/order); do insmod "/modules/$m" 2>/dev/null; done
read up _ </proc/uptime; marks="$marks initrd/modules=$up"

root=/dev/vda
init=/sbin/boxbuild-agent
rootflags=rw
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    root=*) root=${arg#root=} ;;
    init=*) init=${arg#init=} ;;
    ro) rootflags=ro ;;
  esac
done

i=0
while [ ! -b "$root" ] && [ $i -lt 500 ]; do sleep 0.01; i=$((i + 1)); done
if ! mount -o "$rootflags" "$root" /newroot; then
  echo "boxbuild initrd: cannot mount root $root" >&2
  poweroff -f
fi
read up _ </proc/uptime; export BOXBUILD_BOOT_MARKS="$marks initrd/root=$up"
for fs in dev proc sys; do mount --move "/$fs" "/newroot/$fs"; done
exec switch_root /newroot "$init"
