#!/bin/sh
# The init of the tiny box built with --plugin: a stand-in for the service in the boxes of
# KIWI's Python boxbuild plugin, speaking the same protocols.
# - In a VM it reads the kernel command line: kiwi="...", sharing_backend=_B_,
#   kiwi_version=_V_, custom_mount=_P_ and kiwi-no-halt; mounts the tags kiwidescription,
#   kiwibundle and custompath; and powers off at the end.
# - As a container (its image, from build.sh --plugin) it reads /container.cmdline, the
#   same words without sharing_backend, with /description, /bundle and the custom path
#   bind-mounted by the engine; and exits at the end.
# Either way it runs the "build" (it records what it was asked in the bundle dir and runs
# the description's script.sh) and writes result.log and result.code there.
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
if [ -e /container.cmdline ]; then
  container=1
  cmdline=$(cat /container.cmdline)
else
  container=0
  mount -t proc proc /proc 2>/dev/null
  mount -t sysfs sysfs /sys 2>/dev/null
  mount -t devtmpfs devtmpfs /dev 2>/dev/null
  mount -t tmpfs tmpfs /run 2>/dev/null
  # The console (hvc0) came up with its module, after the kernel opened /dev/console.
  exec </dev/console >/dev/console 2>&1
  cmdline=$(cat /proc/cmdline)
fi
value() { echo "$cmdline" | sed -n "s/.*$1=_\([^ ]*\)_.*/\1/p"; }
kiwi=$(echo "$cmdline" | sed -n 's/.*kiwi="\([^"]*\)".*/\1/p')
backend=$(value sharing_backend)
kiwi_version=$(value kiwi_version)
custom=$(value custom_mount)

share() {
  mkdir -p "$2"
  case "$backend" in
    9p) mount -t 9p -o trans=virtio,version=9p2000.L,msize=1048576 "$1" "$2" ;;
    virtiofs) mount -t virtiofs "$1" "$2" ;;
    *) echo "plugin-init: unknown sharing backend '$backend'" ;;
  esac
}
if [ "$container" = 0 ]; then
  share kiwidescription /description
  share kiwibundle /bundle
  [ -n "$custom" ] && share custompath "$custom"
fi

build() {
  echo "kiwi-ng $kiwi --description /description --target-dir /bundle"
  # Split at spaces, as the plugin's shell does.
  printf '%s\n' $kiwi >/bundle/kiwi-args.txt
  if [ "$container" = 1 ]; then echo container; else echo "$backend"; fi >/bundle/sharing-backend.txt
  echo "$kiwi_version" >/bundle/kiwi-version.txt
  echo "$custom" >/bundle/custom-mount.txt
  [ -n "$custom" ] && ls "$custom" >/bundle/custom-listing.txt
  if [ -f /description/script.sh ]; then (cd /bundle && sh /description/script.sh); fi
}
set -o pipefail
build 2>&1 | tee /bundle/result.log
code=$?
[ -e /description/no-result-code ] || echo "$code" >/bundle/result.code
sync
[ "$container" = 1 ] && exit 0
if grep -qw kiwi-no-halt /proc/cmdline; then
  echo "plugin-init: kiwi-no-halt: a shell on the console"
  setsid -c sh </dev/hvc0 >/dev/hvc0 2>&1
fi
umount /bundle /description 2>/dev/null
poweroff -f
