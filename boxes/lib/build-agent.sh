#!/usr/bin/env bash
# Builds the static guest agent and box-test-builder for ARCH into OUTDIR.
#
#   boxes/lib/build-agent.sh ARCH OUTDIR
#
# The host's architecture: cargo, as for boxbuild itself. Another architecture: Debian's
# bare rustc with that architecture's standard library and the cross linker, which a fresh
# Debian machine gets from apt (scripts/install.sh installs them):
#   dpkg --add-architecture arm64 && apt-get update
#   apt-get install rustc libstd-rust-dev:arm64 gcc-aarch64-linux-gnu libc6-dev-arm64-cross
# The agent has no dependencies, so rustc alone builds it (docs/guest-agent.md).
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
[ -x "$rustc" ] || die "no $rustc: apt-get install rustc libstd-rust-dev:$darch (after dpkg --add-architecture $darch)"
command -v "$linker" >/dev/null ||
  die "no $linker: apt-get install gcc-$(gnu_triplet "$arch") libc6-dev-$darch-cross"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
sysroot=()
if [ ! -d "$("$rustc" --print sysroot)/lib/rustlib/$target" ]; then
  # Not installed (multiarch cannot co-install it when the architectures' library
  # versions differ): the same rustc version's standard library, unpacked privately.
  version=$(dpkg-query -W -f '${Version}' rustc 2>/dev/null || true)
  note "unpacking libstd-rust-dev:$darch $version into a private sysroot"
  (cd "$work" && apt-get download -q "libstd-rust-dev:$darch${version:+=$version}" >/dev/null) ||
    die "rustc has no standard library for $target: apt-get install libstd-rust-dev:$darch"
  dpkg-deb -x "$work"/libstd-rust-dev_*.deb "$work/sysroot"
  sysroot=(--sysroot "$work/sysroot/usr")
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
