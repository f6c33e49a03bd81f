#!/usr/bin/env bash
# Installs everything boxbuild needs on Debian/Ubuntu (QEMU, virtiofsd, sshfs, the tools the
# box recipes use, the Rust build), installs boxbuild, builds the tiny test box and the
# Debian kiwi box, registers them, and runs the main job: a real kiwi build of
# examples/debian-tarball in the Debian box.
#
#   scripts/install.sh [--prefix DIR] [--data-dir DIR] [--user] [--no-first-build]
#
# Run as root, it serves every user of the machine: boxbuild goes to /usr/local/bin, the
# boxes to /var/lib/boxbuild (readable by all; --data-dir to choose) and their catalog
# entries to /etc/boxbuild/catalog.d. Run as a normal user (or with --user), all of it stays
# in that user's own dirs: ~/.local/bin, $XDG_DATA_HOME/boxbuild, $XDG_CONFIG_HOME/boxbuild.
# The host's package system is left as it was, apart from the packages installed: box
# recipes take their Debian packages through an apt state of their own.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
prefix=""
data=""
first_build=1
scope=user
[ "$(id -u)" = 0 ] && scope=system
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) prefix=${2:?--prefix needs a directory}; shift 2 ;;
    --data-dir) data=${2:?--data-dir needs a directory}; shift 2 ;;
    --user) scope=user; shift ;;
    --no-first-build) first_build=0; shift ;;
    *) echo "unknown option $1 (see the head of $0)" >&2; exit 2 ;;
  esac
done
if [ "$scope" = system ]; then
  prefix=${prefix:-/usr/local}
  data=${data:-/var/lib/boxbuild}
  config=/etc/boxbuild
else
  prefix=${prefix:-$HOME/.local}
  data=${data:-${XDG_DATA_HOME:-$HOME/.local/share}/boxbuild}
  config=${XDG_CONFIG_HOME:-$HOME/.config}/boxbuild
fi
# What a system install writes is readable by every user; so must be the way to it.
umask 022
if [ "$scope" = system ]; then
  case "$data" in /*) ;; *) data=$(pwd)/$data ;; esac
  dir=$data
  while [ "$dir" != / ]; do
    if [ -d "$dir" ] && [ "$(( 0$(stat -c %a "$dir") & 1 ))" = 0 ]; then
      echo "install.sh: other users cannot enter $dir, so a system-wide box store under it serves root only; run 'chmod o+x $dir' or choose another --data-dir" >&2
      exit 2
    fi
    dir=$(dirname "$dir")
  done
fi
sudo=""
[ "$(id -u)" = 0 ] || sudo=sudo

# A mirror in the middle of a sync fails one index now and then (typically a foreign
# architecture's); apt keeps the lists it has, and a package that is really missing
# fails the install below with apt's own message.
apt_update() {
  $sudo apt-get update -q || echo ">> apt-get update reported errors; going on with the package lists at hand"
}

arch=$(uname -m)
# The other architecture: its QEMU, and what cross-builds the guest agent for its boxes
# (Debian's rustc with that architecture's libstd, the cross linker; see docs/guest-agent.md).
case "$arch" in
  x86_64) qemu_pkg=qemu-system-x86 foreign=aarch64 foreign_deb=arm64 foreign_qemu=qemu-system-arm ;;
  aarch64) qemu_pkg=qemu-system-arm foreign=x86_64 foreign_deb=amd64 foreign_qemu=qemu-system-x86 ;;
  *) echo "unsupported host architecture $arch" >&2; exit 1 ;;
esac
cross_gcc=gcc-${foreign//_/-}-linux-gnu
# One package per apt-get call: a backported qemu-utils can conflict with the distribution's
# QEMU, and apt then resolves each step on its own. qemu-system comes before qemu-utils.
packages=("$qemu_pkg" qemu-utils qemu-system-common sshfs uidmap cpio e2fsprogs xz-utils
  gzip kmod ca-certificates curl gcc libc6-dev bc mmdebstrap genext2fs skopeo fdisk
  debian-archive-keyring "$foreign_qemu" rustc "$cross_gcc" "libc6-dev-$foreign_deb-cross"
  qemu-system-misc qemu-system-ppc gcc-s390x-linux-gnu libc6-dev-s390x-cross
  gcc-powerpc64le-linux-gnu libc6-dev-ppc64el-cross gcc-riscv64-linux-gnu libc6-dev-riscv64-cross
  docker-registry apache2-utils gpg openssl podman runc catatonit uidmap slirp4netns umoci
  rsync python3-venv
  qemu-user-static binfmt-support arch-test)
missing=()
for p in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [ "$status" = "install ok installed" ] || missing+=("$p")
done
# npm (tests/kubevirt.rs fetches KubeVirt's API types with it): Debian's package, unless
# the host has npm already, e.g. from NodeSource's nodejs, which conflicts with it.
command -v npm >/dev/null || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
  echo ">> installing: ${missing[*]}"
  apt_update
  for p in "${missing[@]}"; do
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$p"
  done
fi
# The registry tests start their own registries on free ports; the package's service is
# not wanted.
if [[ " ${missing[*]} " == *" docker-registry "* ]] && command -v systemctl >/dev/null; then
  $sudo systemctl disable --now docker-registry >/dev/null 2>&1 || true
fi
# Foreign boxes with --container run their binaries through qemu-user: binfmt_misc handlers
# with the F flag (Debian's qemu-user-static registers them so); enabled here if they are
# not (a host without systemd's binfmt service, or with binfmt_misc unmounted).
for a in "$foreign" s390x ppc64le riscv64; do
  if [ "$(head -n1 "/proc/sys/fs/binfmt_misc/qemu-$a" 2>/dev/null)" != enabled ]; then
    $sudo update-binfmts --enable "qemu-$a" >/dev/null 2>&1 ||
      echo ">> could not enable the binfmt_misc handler qemu-$a: --container for $a boxes will say what is missing"
  fi
done
command -v qemu-img >/dev/null || {
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends qemu-utils
}

# boxbuild needs Rust 1.89 or newer (Debian 12's own rustc is 1.63).
rust_ok() {
  command -v cargo >/dev/null && command -v rustc >/dev/null &&
    [ "$(rustc --version | sed -n 's/^rustc 1\.\([0-9]*\).*/\1/p')" -ge 89 ] 2>/dev/null
}
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH=$HOME/.cargo/bin:$PATH
if ! rust_ok; then
  echo ">> installing a current Rust toolchain with rustup"
  if command -v rustup >/dev/null; then
    rustup toolchain install stable --profile minimal && rustup default stable
  else
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
  fi || { echo "error: cannot install Rust; install rustup (https://rustup.rs) and re-run" >&2; exit 1; }
  export PATH=$HOME/.cargo/bin:$PATH
  rust_ok || { echo "error: Rust 1.89 or newer is needed; found $(rustc --version 2>&1)" >&2; exit 1; }
fi

echo ">> building boxbuild"
(cd "$here" && cargo build --release --locked -q)
install -D -m 0755 "$here/target/release/boxbuild" "$prefix/bin/boxbuild"
echo ">> installed $prefix/bin/boxbuild"

echo ">> building the tiny box ($arch, and $foreign for cross-architecture builds)"
"$here/boxes/tiny/build.sh" "$data/boxes/tiny-$arch"
"$here/boxes/tiny/build.sh" "$data/boxes/tiny-$foreign" --arch "$foreign"
mkdir -p "$config/catalog.d"
# One catalog entry with both architectures' versions (the first catalog naming a box wins).
rm -f "$config/catalog.d/tiny-$arch.toml"
{
  cat "$data/boxes/tiny-$arch/catalog.toml"
  sed -n '/^\[\[boxes.tiny.versions\]\]/,$p' "$data/boxes/tiny-$foreign/catalog.toml"
} >"$config/catalog.d/tiny.toml"
echo ">> registered box 'tiny' ($arch, $foreign) in $config/catalog.d/tiny.toml"

# The Debian kiwi box is rebuilt only when its recipe or the guest agent changed.
debian=$data/boxes/debian-$arch
stamp=$("$here/boxes/lib/recipe-stamp.sh" debian)
if [ "$(cat "$debian/.recipe-stamp" 2>/dev/null)" != "$stamp" ]; then
  echo ">> building the Debian kiwi box ($arch; a few minutes)"
  "$here/boxes/debian/build.sh" "$debian"
  echo "$stamp" >"$debian/.recipe-stamp"
fi
cp "$debian/catalog.toml" "$config/catalog.d/debian.toml"
echo ">> registered box 'debian' ($arch) in $config/catalog.d/debian.toml"
[ "$scope" = user ] || chmod -R a+rX "$data" "$config"

if [ "$first_build" = 1 ]; then
  out=$(mktemp -d)/out
  echo ">> main job: boxbuild --box debian -- --description examples/debian-tarball --target-dir $out"
  "$prefix/bin/boxbuild" --box debian -- --description "$here/examples/debian-tarball" --target-dir "$out"
  echo ">> results in $out:"
  ls -l "$out"
fi
