#!/bin/sh
# Compiles the guest agent and box-test-builder with a bare rustc (no cargo): the library
# as an rlib, then each binary against it, linked statically with the cross linker.
#
#   compile-agent.sh RUSTC TARGET LINKER SRCDIR OUTDIR [RUSTC OPTION...]
#
# SRCDIR is guest-agent/. POSIX sh: it also runs inside a toolchain chroot.
set -eu
rustc=$1 target=$2 linker=$3 src=$4 out=$5
shift 5
CARGO_PKG_VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' "$src/Cargo.toml" | head -n1)
CARGO_PKG_NAME=guest-agent
export CARGO_PKG_VERSION CARGO_PKG_NAME
mkdir -p "$out"
"$rustc" --edition 2021 --target "$target" "$@" -C opt-level=2 -C debuginfo=0 \
  --crate-type rlib --crate-name guest_agent "$src/src/lib.rs" -o "$out/libguest_agent.rlib"
for bin in boxbuild-agent:src/main.rs box-test-builder:src/bin/box-test-builder.rs; do
  name=${bin%%:*}
  "$rustc" --edition 2021 --target "$target" "$@" -C opt-level=2 -C debuginfo=0 \
    --crate-type bin --crate-name "$(echo "$name" | tr - _)" \
    -C linker="$linker" -C target-feature=+crt-static \
    --extern guest_agent="$out/libguest_agent.rlib" "$src/${bin#*:}" -o "$out/$name"
done
rm -f "$out/libguest_agent.rlib"
