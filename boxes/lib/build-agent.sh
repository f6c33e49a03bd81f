#!/usr/bin/env bash
# Builds the static guest agent and box-test-builder for ARCH into OUTDIR.
#
#   boxes/lib/build-agent.sh ARCH OUTDIR
#
# The host's architecture: cargo, as for boxbuild itself. Another architecture: Debian's
# bare rustc (package rustc) with that architecture's standard library, taken from the
# mirror through the recipes' own apt state (boxes/lib/common.sh) and unpacked into a
# private sysroot, and the cross linker:
#   apt-get install rustc gcc-aarch64-linux-gnu libc6-dev-arm64-cross
# The host's package system is not changed (no foreign dpkg architecture). The agent has
# no dependencies, so rustc alone builds it (docs/guest-agent.md).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/common.sh"
arch=${1:?usage: build-agent.sh ARCH OUTDIR}
out=${2:?usage: build-agent.sh ARCH OUTDIR}
src=$here/../../guest-agent
mkdir -p "$out"

if [ "$arch" = "$(uname -m)" ]; then
  # rustup's cargo, where a login shell's PATH lacks it.
  if ! command -v cargo >/dev/null && [ -x "$HOME/.cargo/bin/cargo" ]; then
    PATH=$HOME/.cargo/bin:$PATH
  fi
  command -v cargo >/dev/null || die "cargo is missing: install Rust (rustup) or run scripts/install.sh"
  # Own target dir: static linking flags would otherwise invalidate the host's release build.
  (cd "$src/.." && cargo build -q --release -p guest-agent --target-dir target/agent-static \
    --config "target.$arch-unknown-linux-gnu.rustflags=[\"-C\",\"target-feature=+crt-static\"]")
  cp "$src/../target/agent-static/release/boxbuild-agent" "$src/../target/agent-static/release/box-test-builder" "$out/"
  exit 0
fi

darch=$(debian_arch "$arch")
target=$(rust_target "$arch")
linker=$(gnu_triplet "$arch")-gcc
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# An architecture Debian 12 lacks (riscv64): Debian 13's rustc, standard library and cross
# linker in a throw-away chroot made by mmdebstrap (no root needed: unshare mode), with
# the agent's sources copied in and the binaries copied out.
if [ "${BOXBUILD_AGENT_TOOLCHAIN:-}" = trixie ] || { [ "$arch" = riscv64 ] && [ -z "${BOXBUILD_CROSS_RUSTC:-}" ]; }; then
  command -v mmdebstrap >/dev/null || die "mmdebstrap is missing (apt-get install mmdebstrap)"
  host_darch=$(dpkg --print-architecture)
  note "building the guest agent for $arch with Debian trixie's rustc (a toolchain chroot)"
  mmdebstrap --quiet --variant=apt --architectures="$host_darch,$darch" \
    --include="rustc,libstd-rust-dev:$darch,gcc-$(gnu_triplet "$arch"),libc6-dev-$darch-cross" \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
    --customize-hook="copy-in $src $here/compile-agent.sh /tmp/" \
    --customize-hook="chroot \"\$1\" sh /tmp/compile-agent.sh rustc $target $linker /tmp/guest-agent /tmp/out" \
    --customize-hook="copy-out /tmp/out/boxbuild-agent /tmp/out/box-test-builder $out/" \
    trixie /dev/null "deb [signed-by=$DEBIAN_KEYRING] $DEBIAN_MIRROR trixie main" >&2 ||
    die "building the agent in a Debian trixie chroot failed (mmdebstrap above)"
  exit 0
fi

rustc=${BOXBUILD_CROSS_RUSTC:-/usr/bin/rustc}
[ -x "$rustc" ] || die "no $rustc: apt-get install rustc"
command -v "$linker" >/dev/null ||
  die "no $linker: apt-get install gcc-$(gnu_triplet "$arch") libc6-dev-$darch-cross"
sysroot=()
if [ ! -d "$("$rustc" --print sysroot)/lib/rustlib/$target" ]; then
  # The standard library must come from the very rustc version that compiles against it.
  version=$("$rustc" --version | sed -n 's/^rustc \([0-9.]*\).*/\1/p')
  [ -n "$version" ] || die "cannot tell the version of $rustc"
  conf=$(box_apt bookworm "$darch") || exit 1
  deb_version=$(APT_CONFIG=$conf apt-cache madison "libstd-rust-dev:$darch" |
    awk -v v="$version" '$3 ~ "^" v "[+~-]" {print $3; exit}')
  [ -n "$deb_version" ] ||
    die "the mirror has no libstd-rust-dev:$darch for rustc $version ($rustc); use Debian 12's rustc or set BOXBUILD_CROSS_RUSTC"
  note "unpacking libstd-rust-dev:$darch $deb_version into a private sysroot"
  fetch_deb "libstd-rust-dev:$darch=$deb_version" "$work/std"
  sysroot=(--sysroot "$work/std/root/usr")
fi

note "building the guest agent for $arch with $("$rustc" --version)"
"$here/compile-agent.sh" "$rustc" "$target" "$linker" "$src" "$out" "${sysroot[@]}"
