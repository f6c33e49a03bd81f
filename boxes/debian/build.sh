#!/usr/bin/env bash
# Builds the Debian 12 (bookworm) kiwi box: Debian's kernel, boxbuild's minimal initrd, and
# a root disk with kiwi-ng (from PyPI, in /opt/kiwi), the tools kiwi needs for Debian
# images and container images, the clients of every sharing backend, and the guest agent.
#
#   boxes/debian/build.sh OUTDIR [--arch x86_64|aarch64] [--kiwi-version V]
#                                [--version V] [--mirror URL] [--agent-dir DIR]
#
# Writes OUTDIR/{kernel,initrd,disk.qcow2} and OUTDIR/catalog.toml, a catalog entry for
# box "debian" whose files point at OUTDIR (scripts/publish-box.sh turns it into a catalog
# for a web server).
#
# Needs: mmdebstrap (with arch-test and qemu-user-static for another architecture), genext2fs, e2fsprogs, qemu-utils, busybox-static's .deb (fetched),
# network access to a Debian mirror and to PyPI. As root mmdebstrap runs in root mode;
# as a normal user it runs in unshare mode, which needs subuid/subgid ranges (uidmap).
# For --arch aarch64 on x86_64 it also needs qemu-user-static and binfmt-support, because
# the packages' scripts run under emulation.
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../lib/common.sh"

out=${1:?usage: build.sh OUTDIR [--arch ARCH] [--kiwi-version V] [--version V] [--mirror URL]}
shift
arch=$(uname -m)
agent_dir=""
kiwi_version=${KIWI_VERSION:-11.1.6}
version=${DEBIAN_BOX_VERSION:-12.1.0}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
while [ $# -gt 0 ]; do
  case "$1" in
    --arch) arch=$2; shift 2 ;;
    --kiwi-version) kiwi_version=$2; shift 2 ;;
    --version) version=$2; shift 2 ;;
    --mirror) mirror=$2; shift 2 ;;
    --agent-dir) agent_dir=$2; shift 2 ;;
    *) die "unknown option $1" ;;
  esac
done
darch=$(debian_arch "$arch")
for tool in mmdebstrap genext2fs resize2fs tune2fs qemu-img; do
  command -v "$tool" >/dev/null || die "$tool is missing (Debian: apt-get install mmdebstrap genext2fs e2fsprogs qemu-utils)"
done

mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$(mktemp -d "${TMPDIR:-/var/tmp}/boxbuild-debian.XXXXXX")
trap 'rm -rf "$work"' EXIT

if [ -z "$agent_dir" ]; then
  note "building the guest agent"
  agent_dir=$work/agent
  "$here/../lib/build-agent.sh" "$arch" "$agent_dir"
fi
[ -x "$agent_dir/boxbuild-agent" ] || die "$agent_dir/boxbuild-agent is missing"

case "$arch" in
  x86_64) grub=(grub-pc-bin grub-efi-amd64-bin) ;;
  aarch64) grub=(grub-efi-arm64-bin) ;;
esac
packages=(
  # boot, devices, network
  "linux-image-$darch" kmod udev iproute2 procps ca-certificates
  # kiwi itself runs from a venv; these are what it calls
  python3 python3-venv
  apt gnupg debian-archive-keyring debootstrap dpkg-dev
  parted gdisk fdisk dosfstools mtools e2fsprogs xfsprogs btrfs-progs squashfs-tools
  kpartx dmsetup lvm2 cryptsetup-bin qemu-utils rsync xz-utils zstd bzip2 cpio file
  xorriso grub2-common "${grub[@]}"
  # container image types and <containers>
  umoci skopeo
  # sharing clients (9p and virtiofs are in the kernel)
  sshfs fuse3
)

# The box boots with boxbuild's own initrd: Debian's initramfs is not built (under
# emulation, for another architecture, that alone takes minutes).
#
# The host's extra CAs let pip reach PyPI through TLS-re-signing networks during the
# build. They are removed again afterwards: boxbuild passes the user's CAs at run time,
# so a published box carries none of the build machine's.
certs=$work/host-ca
mkdir -p "$certs"
find /usr/local/share/ca-certificates -name '*.crt' -exec cp {} "$certs/" \; 2>/dev/null || true

note "bootstrapping Debian bookworm ($darch) with kiwi $kiwi_version"
mmdebstrap --variant=apt --architectures="$darch" --format=tar \
  --include="$(IFS=,; echo "${packages[*]}")" \
  --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --essential-hook='chroot "$1" dpkg-divert --quiet --local --rename --add /usr/sbin/update-initramfs' \
  --essential-hook='ln -s /bin/true "$1/usr/sbin/update-initramfs"' \
  --customize-hook='rm "$1/usr/sbin/update-initramfs"' \
  --customize-hook='chroot "$1" dpkg-divert --quiet --local --rename --remove /usr/sbin/update-initramfs' \
  --customize-hook="mkdir -p \"\$1/usr/local/share/ca-certificates/boxbuild-build\"" \
  --customize-hook="copy-in $certs/. /usr/local/share/ca-certificates/boxbuild-build/" \
  --customize-hook='chroot "$1" update-ca-certificates >/dev/null' \
  --customize-hook='chroot "$1" python3 -m venv /opt/kiwi' \
  --customize-hook="chroot \"\$1\" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root PIP_CERT=/etc/ssl/certs/ca-certificates.crt /opt/kiwi/bin/pip install -q --no-cache-dir --disable-pip-version-check kiwi==$kiwi_version" \
  --customize-hook='ln -sf /opt/kiwi/bin/kiwi-ng "$1/usr/local/bin/kiwi-ng"' \
  --customize-hook="rm -rf \"\$1/usr/local/share/ca-certificates/boxbuild-build\"" \
  --customize-hook='chroot "$1" update-ca-certificates --fresh >/dev/null' \
  --customize-hook="upload $agent_dir/boxbuild-agent /usr/sbin/boxbuild-agent" \
  --customize-hook="upload $here/boxbuild-kiwi /usr/local/bin/boxbuild-kiwi" \
  --customize-hook='chmod 0755 "$1/usr/sbin/boxbuild-agent" "$1/usr/local/bin/boxbuild-kiwi"' \
  --customize-hook="echo 'debian-$version kiwi-$kiwi_version' >\"\$1/etc/box-release\"" \
  --customize-hook='echo boxbuild >"$1/etc/hostname"; : >"$1/etc/resolv.conf"' \
  --customize-hook="upload $here/kiwi.yml /etc/kiwi.yml" \
  --customize-hook="copy-out /boot /lib/modules $work/" \
  --customize-hook='rm -rf "$1"/var/cache/apt/*.bin "$1"/var/lib/apt/lists/* "$1"/boot/initrd.img*' \
  bookworm "$work/root.tar" "$mirror"

note "making the kernel and initrd"
kver=$(ls "$work/modules" | head -n1)
vmlinuz="$work/boot/vmlinuz-$kver"
if [ "$arch" = x86_64 ] && extract_pvh_vmlinux "$vmlinuz" "$work/kernel"; then
  console=ttyS0
else
  cp "$vmlinuz" "$work/kernel"
  console=$(console_of "$arch")
fi
mkdir -p "$work/kroot/lib"
mv "$work/modules" "$work/kroot/lib/modules"
fetch_deb "busybox-static:$darch" "$work/bb"
make_initrd "$work/kroot" "$kver" "$work/bb/root/bin/busybox" "$work/initrd"

note "making the root disk"
# From the tarball, with its owners, without root: genext2fs, as mmdebstrap's own ext2
# format does, but with 4 KiB blocks. With mmdebstrap's 1 KiB blocks a 4 GiB root has 512
# block groups, and mounting it took 0.5 s of every boot under TCG (0.07 s now).
tar_bytes=$(stat -c %s "$work/root.tar")
entries=$(tar -tf "$work/root.tar" | wc -l)
genext2fs -B 4096 -b $((tar_bytes / 4096 * 3 / 2 + 16384)) -N $((entries * 2 + 8192)) \
  -a "$work/root.tar" "$work/root.ext2"
rm -f "$work/root.tar"
# Room for logs and apt's lists; the qcow2 stays sparse, so the free space costs nothing.
resize2fs -f "$work/root.ext2" "${ROOT_SIZE:-4G}" >/dev/null 2>&1
tune2fs -O dir_index "$work/root.ext2" >/dev/null
qemu-img convert -q -c -f raw -O qcow2 "$work/root.ext2" "$work/disk.qcow2"
install_box_files "$work" "$out"

cat >"$out/catalog.toml" <<TOML
# Generated by boxes/debian/build.sh
[boxes.debian]
description = "Debian 12 (bookworm) with kiwi-ng $kiwi_version"
builder = ["/usr/local/bin/boxbuild-kiwi"]
memory = "2G"
cpus = 2
scratch = "40G"

$(catalog_version debian "$version" "$arch" "console=$console root=/dev/vda init=/usr/sbin/boxbuild-agent panic=-1 quiet cryptomgr.notests rodata=off" "$console" "$out")
TOML
note "debian box ($arch, kiwi $kiwi_version) in $out: $(du -sh "$out" | cut -f1)"
