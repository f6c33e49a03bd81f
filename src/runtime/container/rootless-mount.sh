#!/bin/sh
# mount and umount as a rootless boxbuild container on the host's network runs them
# (docs/container.md, "Rootless"). Such a container shares the host's network namespace,
# so its /sys is the host's sysfs, whose submounts the kernel locks in a user namespace:
# a plain bind mount of it (kiwi binds /sys into the image root) is refused, a recursive
# one is allowed. So a bind mount that fails is tried once more as a recursive one, and
# an unmount that fails is tried once more recursively. Anything else is passed on as the
# real command gave it.
case "$0" in
  *umount) real=/usr/lib/boxbuild/umount retry=-R ;;
  *) real=/usr/lib/boxbuild/mount retry="" ;;
esac
err=$(mktemp 2>/dev/null) || exec "$real" "$@"
"$real" "$@" 2>"$err"
code=$?
if [ "$code" = 0 ]; then
  rm -f "$err"
  exit 0
fi
if [ -z "$retry" ]; then
  bind=""
  for a do
    shift
    case $a in
      --bind|-B) bind=1; set -- "$@" --rbind ;;
      *) set -- "$@" "$a" ;;
    esac
  done
  if [ -n "$bind" ] && "$real" "$@" 2>/dev/null; then
    rm -f "$err"
    exit 0
  fi
elif "$real" $retry "$@" 2>/dev/null; then
  rm -f "$err"
  exit 0
fi
cat "$err" >&2
rm -f "$err"
exit "$code"
