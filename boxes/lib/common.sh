# Shared steps of the box recipes. Sourced, not run. Needs no root: Debian packages are
# fetched with `apt-get download` from the recipes' own apt state (box_apt) and unpacked
# with dpkg-deb, disks are made with `mke2fs -d`, the initrd with cpio.
set -euo pipefail
# mke2fs, resize2fs, depmod and friends live in the sbin directories, which a normal
# user's PATH often lacks.
case ":$PATH:" in *:/usr/sbin:*) ;; *) PATH=$PATH:/usr/local/sbin:/usr/sbin:/sbin ;; esac
export PATH

die() { echo "error: $*" >&2; exit 1; }
note() { echo ">> $*" >&2; }

# Debian's name for a boxbuild architecture.
debian_arch() {
  case "$1" in
    x86_64) echo amd64 ;;
    aarch64) echo arm64 ;;
    s390x) echo s390x ;;
    ppc64le) echo ppc64el ;;
    riscv64) echo riscv64 ;;
    *) die "unsupported architecture $1 (use x86_64, aarch64, s390x, ppc64le or riscv64)" ;;
  esac
}

# The GNU triplet of an architecture (cross toolchains are named after it).
gnu_triplet() {
  case "$1" in
    ppc64le) echo powerpc64le-linux-gnu ;;
    *) echo "$1-linux-gnu" ;;
  esac
}

# The serial console QEMU's default machine of an architecture gives the guest.
console_of() {
  case "$1" in
    aarch64) echo ttyAMA0 ;;
    s390x) echo ttysclp0 ;;
    ppc64le) echo hvc0 ;;
    *) echo ttyS0 ;;
  esac
}

# Rust's target name for an architecture.
rust_target() {
  case "$1" in
    ppc64le) echo powerpc64le-unknown-linux-gnu ;;
    riscv64) echo riscv64gc-unknown-linux-gnu ;;
    *) echo "$1-unknown-linux-gnu" ;;
  esac
}

# The recipes' own apt state. Every package a box takes is resolved against the Debian
# mirror alone, with sources, package lists and an empty dpkg status of the recipes' own:
# the same recipe gives the same box whatever the host has installed (a point release, a
# pin, backports, foreign architectures), and a box may come from another Debian release
# than the host's. The host's package system is never changed.
#
#   DEBIAN_MIRROR            the archive (default http://deb.debian.org/debian)
#   DEBIAN_SECURITY_MIRROR   the security archive (default http://deb.debian.org/debian-security)
#   BOXBUILD_RECIPE_CACHE    where the states live (default $XDG_CACHE_HOME/boxbuild/recipes)
#   BOXBUILD_APT_MAX_AGE     seconds before a state's lists are refreshed (default 21600)
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
DEBIAN_SECURITY_MIRROR=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
DEBIAN_KEYRING=${DEBIAN_KEYRING:-/usr/share/keyrings/debian-archive-keyring.gpg}

recipe_cache() {
  echo "${BOXBUILD_RECIPE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/boxbuild/recipes}"
}

# box_apt SUITE DARCH: prints the APT_CONFIG file of the private state for one Debian suite
# (bookworm, trixie, ...) and package architecture, made and refreshed as needed. Parallel
# recipes share a state; a lock keeps them from updating it at the same time.
box_apt() {
  local suite=$1 darch=$2 state
  state=$(recipe_cache)/apt/$suite-$darch
  mkdir -p "$state"/{lists/partial,archives/partial,sources.list.d,preferences.d,apt.conf.d}
  [ -r "$DEBIAN_KEYRING" ] ||
    die "$DEBIAN_KEYRING is missing (apt-get install debian-archive-keyring, or set DEBIAN_KEYRING)"
  local conf=$state/apt.conf
  {
    echo "Dir::State \"$state\"; Dir::State::Lists \"$state/lists\";"
    echo "Dir::State::status \"$state/status\"; Dir::State::extended_states \"$state/extended_states\";"
    echo "Dir::Cache \"$state\"; Dir::Cache::Archives \"$state/archives\";"
    echo "Dir::Cache::pkgcache \"\"; Dir::Cache::srcpkgcache \"\";"
    echo "Dir::Etc::SourceList \"$state/sources.list\"; Dir::Etc::SourceParts \"$state/sources.list.d\";"
    echo "Dir::Etc::Preferences \"$state/preferences\"; Dir::Etc::PreferencesParts \"$state/preferences.d\";"
    echo "APT::Architecture \"$darch\"; APT::Architectures { \"$darch\"; };"
    echo "Dir::Etc::Parts \"$state/apt.conf.d\"; Acquire::Languages \"none\"; Acquire::Retries \"3\";"
    echo "Acquire::GzipIndexes \"true\"; Acquire::CompressionTypes::Order:: \"gz\";"
    # Of the host's apt configuration only its proxies apply.
    apt-config dump 2>/dev/null | grep -iE '^Acquire::(http|https|ftp)::Proxy' || true
    # As root apt drops to _apt for downloads, which cannot write into a user's cache.
    [ "$(id -u)" = 0 ] && echo "APT::Sandbox::User \"root\";"
  } >"$conf.new"
  {
    echo "deb [signed-by=$DEBIAN_KEYRING] $DEBIAN_MIRROR $suite main"
    echo "deb [signed-by=$DEBIAN_KEYRING] $DEBIAN_MIRROR $suite-updates main"
    echo "deb [signed-by=$DEBIAN_KEYRING] $DEBIAN_SECURITY_MIRROR $suite-security main"
  } >"$state/sources.list.new"
  (
    flock 9
    : >>"$state/status"
    local changed=0
    cmp -s "$conf.new" "$conf" || changed=1
    cmp -s "$state/sources.list.new" "$state/sources.list" || changed=1
    mv -f "$conf.new" "$conf"
    mv -f "$state/sources.list.new" "$state/sources.list"
    local age=$(( $(date +%s) - $(stat -c %Y "$state/updated" 2>/dev/null || echo 0) ))
    if [ "$changed" = 1 ] || [ "$age" -gt "${BOXBUILD_APT_MAX_AGE:-21600}" ]; then
      note "updating the package lists of Debian $suite ($darch) from $DEBIAN_MIRROR"
      # A mirror in the middle of a sync can fail one index; a package that is really
      # missing then fails its download with apt's own message.
      APT_CONFIG=$conf apt-get update -q >"$state/update.log" 2>&1 ||
        note "apt-get update reported errors (see $state/update.log); going on with the lists at hand"
      ls "$state/lists/"*Packages* >/dev/null 2>&1 ||
        die "no package lists for Debian $suite ($darch) from $DEBIAN_MIRROR: $(grep -E '^(E|W):' "$state/update.log" | head -n1)"
      touch "$state/updated"
    fi
  ) 9>"$state/lock" || exit 1
  echo "$conf"
}

# fetch_deb PACKAGE[:ARCH][=VERSION] DIR [SUITE]: downloads the .deb from the mirror (SUITE,
# default bookworm) into DIR/debs and unpacks it into DIR/root.
fetch_deb() {
  local spec=$1 dir=$2 suite=${3:-bookworm}
  local pkg=${spec%%=*} darch conf
  darch=${pkg#*:}
  [ "$darch" != "$pkg" ] || darch=$(dpkg --print-architecture)
  conf=$(box_apt "$suite" "$darch") || exit 1
  mkdir -p "$dir/debs" "$dir/root"
  (cd "$dir/debs" && APT_CONFIG=$conf apt-get download -q "$spec" >"$dir/debs/.log" 2>&1) ||
    die "Debian $suite has no $spec at $DEBIAN_MIRROR: $(grep -E '^E:' "$dir/debs/.log" | head -n1)"
  local deb
  deb=$(ls -t "$dir/debs/${pkg%%:*}"_*.deb | head -n1)
  dpkg-deb -x "$deb" "$dir/root"
}

# kernel_package DARCH [SUITE]: the versioned kernel package behind Debian's
# linux-image-<flavour> meta package in SUITE (default bookworm).
kernel_package() {
  local darch=$1 suite=${2:-bookworm} flavour=$1 conf
  [ "$darch" = ppc64el ] && flavour=powerpc64le
  conf=$(box_apt "$suite" "$darch") || exit 1
  APT_CONFIG=$conf apt-cache depends "linux-image-$flavour:$darch" 2>/dev/null |
    awk '/Depends: linux-image-[0-9]/ {sub(/:.*/, "", $2); print $2; exit}'
}

# extract_pvh_vmlinux VMLINUZ OUT: the uncompressed ELF inside an x86 bzImage. QEMU boots
# it through PVH, skipping the kernel's self-decompression: about 2 s instead of 4.5 s
# under TCG. Returns non-zero if the image holds no xz stream.
extract_pvh_vmlinux() {
  local vmlinuz=$1 out=$2 offset
  offset=$(LC_ALL=C grep -obUaP '\xfd7zXZ\x00' "$vmlinuz" | head -n1 | cut -d: -f1) || return 1
  [ -n "$offset" ] || return 1
  tail -c +$((offset + 1)) "$vmlinuz" | xz -dcq --single-stream >"$out" 2>/dev/null || true
  [ "$(head -c 4 "$out" | od -An -tx1 | tr -d ' ')" = "7f454c46" ] || return 1
}

# module_files ROOT KVER MODULE...: the .ko paths (relative to ROOT) of the modules and
# their dependencies, in load order, without repeats.
module_files() {
  local root=$1 kver=$2; shift 2
  depmod -b "$root" "$kver"
  local m
  for m in "$@"; do
    modprobe -d "$root" -S "$kver" --show-depends "$m" 2>/dev/null |
      awk '$1 == "insmod" {print $2}'
  done | awk '!seen[$0]++' | sed "s|^$root/||"
}

# The modules every box needs to find its disk, its agent channel and its shares.
BOX_MODULES="virtio_pci virtio_mmio virtio_blk virtio_console virtio_net ext4 9pnet_virtio 9p virtiofs fuse"

# unsign_module KO: removes the signature appended to a kernel module (the trailer is the
# 28-byte magic "~Module signature appended~\n" after a 12-byte struct module_signature
# whose last 4 bytes are the signature's length, big-endian; linux/module_signature.h).
# The kernel then loads it without verifying it: no cost under emulation, and no change
# where signatures are not enforced (Debian's kernels outside Secure Boot lockdown). A
# module without a signature is left as it is.
unsign_module() {
  local ko=$1 size len
  [ "$(tail -c 28 "$ko" | tr -d '\000')" = "~Module signature appended~" ] || return 0
  size=$(stat -c %s "$ko")
  len=$(tail -c 32 "$ko" | head -c 4 | od -An -tu1 | awk '{print $1*16777216 + $2*65536 + $3*256 + $4}')
  [ "$len" -gt 0 ] && [ $((len + 40)) -lt "$size" ] || return 0
  truncate -s $((size - len - 40)) "$ko"
}

# make_initrd KROOT KVER BUSYBOX OUT: an initrd that loads the box modules, mounts root= and
# switch_roots into init= (both from the kernel command line). The modules are unpacked
# and unsigned, and the cpio is not compressed: the kernel would otherwise decompress and
# verify them at every boot (see docs/design.md, "Booting fast").
make_initrd() {
  local kroot=$1 kver=$2 busybox=$3 out=$4 here
  here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
  local work
  work=$(mktemp -d)
  mkdir -p "$work"/{bin,dev,proc,sys,newroot,modules}
  install -m 0755 "$busybox" "$work/bin/busybox"
  install -m 0755 "$here/initrd-init.sh" "$work/init"
  # The applets initrd-init.sh runs, linked once here instead of `busybox --install` at
  # every boot (0.04 s under emulation).
  local applet
  for applet in sh cat mount insmod sleep poweroff switch_root; do
    ln -s busybox "$work/bin/$applet"
  done
  local f
  : >"$work/modules/order"
  for f in $(module_files "$kroot" "$kver" $BOX_MODULES); do
    case "$f" in
      *.ko.xz) xz -dc "$kroot/$f" >"$work/modules/$(basename "${f%.xz}")" ;;
      *.ko.zst) zstd -qdc "$kroot/$f" >"$work/modules/$(basename "${f%.zst}")" ;;
      *) cp "$kroot/$f" "$work/modules/" ;;
    esac
    basename "${f%.xz}" | sed 's/\.zst$//' >>"$work/modules/order"
    unsign_module "$work/modules/$(tail -n1 "$work/modules/order")"
  done
  (cd "$work" && find . | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0) >"$out"
  rm -rf "$work"
}

# busybox_applets BUSYBOX: the applet names of a busybox of the host's architecture, or a
# fixed list when the binary cannot run here (another architecture).
busybox_applets() {
  "$1" --list 2>/dev/null ||
    echo sh ash cat cp mv rm ls ln mkdir rmdir echo printf test [ true false sleep uname \
      mount umount sync poweroff reboot dd head tail wc grep sed awk find env id stat \
      touch chmod chown kill sha256sum md5sum od tr cut sort uniq xargs date df du tee \
      ip wget setsid
}

# install_box_files FROM OUT: moves kernel, initrd and disk.qcow2 into OUT, each by a
# rename, so a build running from an earlier version of these files keeps reading it.
install_box_files() {
  local f
  for f in kernel initrd disk.qcow2; do
    cp "$1/$f" "$2/.$f.new" && mv -f "$2/.$f.new" "$2/$f"
  done
}

# catalog_version NAME VERSION ARCH CMDLINE CONSOLE DIR: a catalog's version entry for the
# box files kernel, initrd and disk.qcow2 in DIR.
catalog_version() {
  local name=$1 version=$2 arch=$3 cmdline=$4 console=$5 dir=$6 f
  printf '[[boxes.%s.versions]]\nversion = "%s"\narch = "%s"\ncmdline = "%s"\nconsole = "%s"\n' \
    "$name" "$version" "$arch" "$cmdline" "$console"
  for f in kernel initrd disk.qcow2; do
    printf '%s = { path = "%s", size = %s, sha256 = "%s" }\n' \
      "${f%.qcow2}" "$dir/$f" "$(size "$dir/$f")" "$(sha256 "$dir/$f")"
  done
}

# sha256 FILE and size FILE: the values a catalog entry needs.
sha256() { sha256sum "$1" | cut -d' ' -f1; }
size() { stat -c %s "$1"; }
