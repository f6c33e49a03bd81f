#!/usr/bin/env bash
# Builds the tiny test box: Debian's kernel, a minimal initrd, and a small ext4 root disk
# holding busybox, boxbuild-agent and box-test-builder. A few MB; boots in seconds under TCG.
#
#   boxes/tiny/build.sh OUTDIR [--arch ARCH] [--suite SUITE] [--agent-dir DIR] [--plugin]
#                              [--keep-vmlinuz]
#
# ARCH is x86_64, aarch64, s390x, ppc64le or riscv64; the packages come from Debian SUITE
# (default: bookworm, trixie for riscv64, which Debian 12 lacks) through the recipes' own
# apt state, whatever the host runs.
#
# With --plugin the box is "tiny-plugin": instead of the agent it runs plugin-init.sh, which
# speaks the kernel-command-line protocol of KIWI's Python boxbuild plugin (for tests), and
# the same root is also written as a container image speaking the plugin's container
# protocol: OUTDIR/container, an OCI image layout (tag "latest"; made with umoci), for
# `skopeo copy oci:OUTDIR/container:latest docker://REGISTRY/...`.
#
# Writes OUTDIR/{kernel,initrd,disk.qcow2} and OUTDIR/catalog.toml, a catalog entry for box
# "tiny" whose file URLs point at OUTDIR. Needs: apt-get, dpkg-deb, cpio, e2fsprogs,
# qemu-img, xz-utils; no root.
#
# With --keep-vmlinuz Debian's compressed kernel is kept too, as OUTDIR/vmlinuz (for
# tests of boxes that come with a bzImage).
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../lib/common.sh"

out=${1:?usage: build.sh OUTDIR [--arch ARCH] [--agent-dir DIR]}; shift
arch=$(uname -m)
agent_dir=""
plugin=0
suite=""
keep_vmlinuz=0
while [ $# -gt 0 ]; do
  case "$1" in
    --arch) arch=$2; shift 2 ;;
    --suite) suite=$2; shift 2 ;;
    --agent-dir) agent_dir=$2; shift 2 ;;
    --plugin) plugin=1; shift ;;
    --keep-vmlinuz) keep_vmlinuz=1; shift ;;
    *) die "unknown option $1" ;;
  esac
done
darch=$(debian_arch "$arch")
if [ -z "$suite" ]; then
  case "$arch" in riscv64) suite=trixie ;; *) suite=bookworm ;; esac
fi
version=${TINY_VERSION:-1.0.0}

mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if [ -z "$agent_dir" ]; then
  note "building the guest agent"
  agent_dir=$work/agent
  "$here/../lib/build-agent.sh" "$arch" "$agent_dir"
fi
for bin in boxbuild-agent box-test-builder; do
  [ -x "$agent_dir/$bin" ] || die "$agent_dir/$bin is missing"
done

note "fetching Debian $suite's kernel and busybox ($darch)"
kpkg=$(kernel_package "$darch" "$suite")
[ -n "$kpkg" ] || die "Debian $suite has no linux-image package for $darch at $DEBIAN_MIRROR"
fetch_deb "$kpkg:$darch" "$work/k" "$suite"
fetch_deb "busybox-static:$darch" "$work/bb" "$suite"
# Merged /usr (Debian 13): the modules are in /usr/lib/modules.
[ -e "$work/k/root/lib" ] || ln -s usr/lib "$work/k/root/lib"
kver=$(ls "$work/k/root/lib/modules" | head -n1)
# vmlinuz on most architectures, an uncompressed vmlinux on ppc64el.
vmlinuz=$(ls "$work/k/root/boot/vmlinuz-$kver" "$work/k/root/boot/vmlinux-$kver" 2>/dev/null | head -n1 || true)
# /bin on Debian 12, /usr/bin on later (merged-/usr) releases.
busybox=$(ls "$work/bb/root/bin/busybox" "$work/bb/root/usr/bin/busybox" 2>/dev/null | head -n1 || true)

note "kernel $kver"
if [ "$arch" = x86_64 ] && extract_pvh_vmlinux "$vmlinuz" "$work/kernel"; then
  console=ttyS0
else
  cp "$vmlinuz" "$work/kernel"
  console=$(console_of "$arch")
fi

[ "$keep_vmlinuz" = 0 ] || install -m 0644 "$vmlinuz" "$out/vmlinuz"

note "making the initrd"
make_initrd "$work/k/root" "$kver" "$busybox" "$work/initrd"

note "making the root disk"
root="$work/rootfs"
mkdir -p "$root"/{bin,sbin,usr/bin,proc,sys,dev,run,tmp,etc,root}
install -m 0755 "$busybox" "$root/bin/busybox"
for applet in $(busybox_applets "$busybox"); do
  case "$applet" in busybox|*/*) continue ;; esac
  [ -e "$root/bin/$applet" ] || ln -s busybox "$root/bin/$applet"
done
# sshfs and the libraries it needs, for --sshfs-sharing (sshfs -o passive over a port).
case "$suite" in
  bookworm) sshfs_libs="libglib2.0-0 libfuse3-3" ;;
  *) sshfs_libs="libglib2.0-0t64 libfuse3-4" ;;
esac
for pkg in libc6 libpcre2-8-0 $sshfs_libs sshfs; do
  fetch_deb "$pkg:$darch" "$work/sshfs" "$suite"
done
# Merged /usr (Debian 13): the libraries' ELF interpreter path goes through /lib.
[ -e "$work/sshfs/root/lib" ] || ln -s usr/lib "$root/lib"
for part in lib lib64 usr/lib usr/bin/sshfs; do
  [ -e "$work/sshfs/root/$part" ] || continue
  mkdir -p "$root/$(dirname "$part")"
  cp -a "$work/sshfs/root/$part" "$root/$(dirname "$part")/"
done
rm -rf "$root/usr/lib/"*/gconv "$root/usr/share"
install -m 0755 "$agent_dir/boxbuild-agent" "$root/sbin/boxbuild-agent"
install -m 0755 "$agent_dir/box-test-builder" "$root/usr/bin/box-test-builder"
install -m 0755 "$here/plugin-init.sh" "$root/sbin/plugin-init"
echo "tiny-$version debian-$suite" >"$root/etc/box-release"
# An empty CA bundle where Debian keeps it: the host's extra CAs are appended at run time.
mkdir -p "$root/etc/ssl/certs" && : >"$root/etc/ssl/certs/ca-certificates.crt"
chmod 1777 "$root/tmp"
mke2fs -q -t ext4 -L tinyroot -E root_owner=0:0 -d "$root" -F "$work/disk.raw" 96M >/dev/null
qemu-img convert -q -f raw -O qcow2 "$work/disk.raw" "$work/disk.qcow2"
install_box_files "$work" "$out"
if [ "$plugin" = 1 ]; then
  command -v umoci >/dev/null || die "umoci is missing (apt-get install umoci): it writes the container image of the plugin box"
  case "$arch" in
    x86_64) goarch=amd64 ;; aarch64) goarch=arm64 ;; ppc64le) goarch=ppc64le ;; *) goarch=$darch ;;
  esac
  layout=$work/container
  rootless=""; [ "$(id -u)" = 0 ] || rootless=--rootless
  umoci init --layout "$layout"
  umoci new --image "$layout:latest"
  umoci insert $rootless --image "$layout:latest" "$root" /
  umoci config --image "$layout:latest" --architecture "$goarch" --os linux \
    --config.cmd /sbin/plugin-init --config.label org.opencontainers.image.title=tiny-plugin
  umoci gc --layout "$layout"
  rm -rf "$out/container" && mv "$layout" "$out/container"
fi

if [ "$plugin" = 1 ]; then
  name=tiny-plugin
  settings='protocol = "kiwi-boxed-plugin"'
  description="Tiny test box speaking the guest protocol of KIWI's Python plugin"
  console=hvc0
  init=/sbin/plugin-init
else
  name=tiny
  settings='builder = ["box-test-builder"]'
  description="Tiny test box: busybox, boxbuild-agent and a test builder"
  init=/sbin/boxbuild-agent
fi
cat >"$out/catalog.toml" <<TOML
# Generated by boxes/tiny/build.sh
[boxes.$name]
description = "$description"
$settings
memory = "256M"
cpus = 1

$(catalog_version "$name" "$version" "$arch" "console=$console root=/dev/vda init=$init panic=-1 quiet cryptomgr.notests rodata=off" "$console" "$out")
TOML
note "$name box ($arch) in $out: $(du -sh "$out" | cut -f1)"
