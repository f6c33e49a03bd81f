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
  # Own target dir: static linking flags would otherwise invalidate the host's release build.
  (cd "$src/.." && cargo build -q --release -p guest-agent --target-dir target/agent-static \
    --config "target.$arch-unknown-linux-gnu.rustflags=[\"-C\",\"target-feature=+crt-static\"]")
  cp "$src/../target/agent-static/release/boxbuild-agent" "$src/../target/agent-static/release/box-test-builder" "$out/"
  exit 0
fi

darch=$(debian_arch "$arch")
target=$(rust_target "$arch")
rustc=${BOXBUILD_CROSS_RUSTC:-/usr/bin/rustc}
linker=$(gnu_triplet "$arch")-gcc
[ -x "$rustc" ] || die "no $rustc: apt-get install rustc"
command -v "$linker" >/dev/null ||
  die "no $linker: apt-get install gcc-$(gnu_triplet "$arch") libc6-dev-$darch-cross"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
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
CARGO_PKG_VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' "$src/Cargo.toml" | head -n1)
export CARGO_PKG_VERSION CARGO_PKG_NAME=guest-agent
common=(--edition 2021 --target "$target" "${sysroot[@]}" -C opt-level=2 -C debuginfo=0)
"$rustc" "${common[@]}" --crate-type rlib --crate-name guest_agent \
  "$src/src/lib.rs" -o "$work/libguest_agent.rlib"
for bin in boxbuild-agent:src/main.rs box-test-builder:src/bin/box-test-builder.rs; do
  name=${bin%%:*}
  "$rustc" "${common[@]}" --crate-type bin --crate-name "${name//-/_}" \
    -C linker="$linker" -C target-feature=+crt-static \
    --extern guest_agent="$work/libguest_agent.rlib" "$src/${bin#*:}" -o "$out/$name"
done
