#!/usr/bin/env bash
# Benchmark of cross-architecture builds: examples/debian-tarball for a foreign
# architecture (default aarch64) (a) in that architecture's Debian box as a VM under TCG,
# (b) with --container through the host's qemu-user (binfmt_misc), and (c) for the host's
# own architecture with --container, the native reference. One run each, on one machine,
# in one go. Also checks that (a) and (b) give the same package list and foreign binaries.
# Prints a Markdown section; scripts/bench.sh puts it into docs/benchmarks.md.
#
#   scripts/bench-cross.sh [ARCH]
#
# The foreign Debian box is built by its recipe into a scratch dir unless
# $BOXBUILD_CROSS_BOX_DIR names one already built (boxes/debian/build.sh DIR --arch ARCH).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
arch=${1:-aarch64}
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH=$HOME/.cargo/bin:$PATH
(cd "$here" && cargo build --release --locked -q)
boxbuild=$here/target/release/boxbuild
work=$(mktemp -d "${TMPDIR:-/var/tmp}/bench-cross.XXXXXX")
trap 'rm -rf "$work"' EXIT
now() { date +%s.%N; }
since() { printf '%.0f' "$(echo "$(now) - $1" | bc -l)"; }
minutes() { printf '%d min %02d s' $(($1 / 60)) $(($1 % 60)); }
ratio() { printf '%.1f' "$(echo "$1 / $2" | bc -l)"; }

foreign_box=${BOXBUILD_CROSS_BOX_DIR:-}
if [ -z "$foreign_box" ]; then
  echo ">> building the Debian box ($arch)" >&2
  foreign_box=$work/box-$arch
  "$here/boxes/debian/build.sh" "$foreign_box" --arch "$arch" >"$work/box-build.log" 2>&1 ||
    { tail -n 30 "$work/box-build.log" >&2; exit 1; }
fi
native_box=${BOXBUILD_TEST_DEBIAN_BOX_DIR:-}
if [ -z "$native_box" ]; then
  echo ">> building the Debian box ($(uname -m))" >&2
  native_box=$work/box-native
  "$here/boxes/debian/build.sh" "$native_box" >"$work/native-build.log" 2>&1 ||
    { tail -n 30 "$work/native-build.log" >&2; exit 1; }
fi
# One catalog naming both architectures' versions of the box.
{
  cat "$native_box/catalog.toml"
  sed -n '/^\[\[boxes.debian.versions\]\]/,$p' "$foreign_box/catalog.toml"
} >"$work/catalog.toml"
export BOXBUILD_CONFIG=$work/catalog.toml BOXBUILD_CACHE_DIR=$work/cache

build() { # NAME FLAGS...: one build of the example; its wall time in seconds on stdout
  local name=$1 t0
  shift
  t0=$(now)
  "$boxbuild" --no-update-check "$@" --box debian -- --description "$here/examples/debian-tarball" \
    --target-dir "$work/$name" >"$work/$name.log" 2>&1 ||
    { echo "$name failed:" >&2; tail -n 30 "$work/$name.log" >&2; exit 1; }
  since "$t0"
}

# The container roots are unpacked before they are timed (once per box version).
for a in "$arch" "$(uname -m)"; do
  "$boxbuild" -q --no-update-check --container --arch "$a" --box debian -- \
    --description "$here/examples/debian-tarball" --target-dir "$work/unpack-$a" --version >/dev/null
done
echo ">> (c) $(uname -m) with --container" >&2
native_s=$(build native --container)
echo ">> (b) $arch with --container through qemu-user" >&2
user_s=$(build user --container --arch "$arch")
echo ">> (a) $arch in the VM (TCG)" >&2
vm_s=$(build vm --no-accel --arch "$arch")

packages() { sort "$(ls "$work/$1"/*.packages | head -n1)"; }
same_packages=no
[ "$(packages vm)" = "$(packages user)" ] && same_packages=yes
binary_of() { # a few binaries' `file` words, from the tarball
  local tarball
  tarball=$(ls "$work/$1"/*.tar.xz | head -n1)
  mkdir -p "$work/$1-files"
  tar -xJf "$tarball" -C "$work/$1-files" ./usr/bin/dpkg ./usr/bin/bash 2>/dev/null ||
    tar -xJf "$tarball" -C "$work/$1-files" usr/bin/dpkg usr/bin/bash
  file -b "$work/$1-files/usr/bin/dpkg" | cut -d, -f1-2
}
vm_file=$(binary_of vm)
user_file=$(binary_of user)
mode=rootless
[ "$(id -u)" = 0 ] && mode=privileged

cat <<EOF
## Cross-architecture: examples/debian-tarball for $arch, one run each

| build | wall time |
|---|---|
| (a) $arch box as a VM under TCG | $(minutes "$vm_s") |
| (b) $arch box with \`--container\` through qemu-user ($mode) | $(minutes "$user_s") |
| (c) $(uname -m) box with \`--container\` ($mode, native CPU) | $(minutes "$native_s") |

(b) is $(ratio "$vm_s" "$user_s")x faster than (a) (goal: at least 3x) and takes
$(ratio "$user_s" "$native_s")x the native build (c) (goal: within 5x). The package lists of
(a) and (b) are equal: $same_packages. \`file usr/bin/dpkg\` in the tarballs: (a) $vm_file;
(b) $user_file.
EOF
