#!/usr/bin/env bash
# Benchmark of the Debian kiwi box: its build time and size, boot-to-ready, and the wall
# time of the example kiwi build (examples/debian-tarball) through boxbuild, in the VM
# and with --container, beside the same kiwi build run directly on the host (as root,
# kiwi from PyPI in a venv). One run each, on one machine. Prints a Markdown section; scripts/bench.sh puts it into
# docs/benchmarks.md.
#
#   scripts/bench-kiwi.sh [--arch aarch64]
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
arch=$(uname -m)
[ "${1:-}" = --arch ] && arch=$2
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH=$HOME/.cargo/bin:$PATH
(cd "$here" && cargo build --release --locked -q)
boxbuild=$here/target/release/boxbuild
kiwi_version=$(sed -n 's/.*KIWI_VERSION:-\([0-9.]*\)}.*/\1/p' "$here/boxes/debian/build.sh")
work=$(mktemp -d "${TMPDIR:-/var/tmp}/bench-kiwi.XXXXXX")
trap 'rm -rf "$work"' EXIT
now() { date +%s.%N; }
since() { printf '%.0f' "$(echo "$(now) - $1" | bc -l)"; }
minutes() { printf '%d min %02d s' $(($1 / 60)) $(($1 % 60)); }

echo ">> building the Debian box ($arch)" >&2
t0=$(now)
"$here/boxes/debian/build.sh" "$work/box" --arch "$arch" >"$work/box-build.log" 2>&1 ||
  { tail -n 30 "$work/box-build.log" >&2; exit 1; }
box_build_s=$(since "$t0")
disk_mib=$(( $(stat -c %s "$work/box/disk.qcow2") / 1048576 ))
kernel_mib=$(( ($(stat -c %s "$work/box/kernel") + $(stat -c %s "$work/box/initrd")) / 1048576 ))
virtual_gib=$(qemu-img info "$work/box/disk.qcow2" | sed -n 's/^virtual size: \([0-9.]* [A-Za-z]*\).*/\1/p')
export BOXBUILD_CONFIG=$work/box/catalog.toml
export BOXBUILD_CACHE_DIR=$work/cache

echo ">> boot to ready, kiwi-ng --version" >&2
t0=$(now)
"$boxbuild" -v --no-accel --box debian --arch "$arch" -- --description "$here/examples/debian-tarball" \
  --target-dir "$work/version" --version >"$work/version.log" 2>&1
version_s=$(printf '%.1f' "$(echo "$(now) - $t0" | bc -l)")
ready_s=$(sed -n 's/.*agent .* ready \([0-9.]*\)s after the box started.*/\1/p' "$work/version.log")
started_s=$(sed -n 's/.*start-up: .*builder at \([0-9.]*\)s$/\1/p' "$work/version.log")
phases=$(sed -n 's/^boxbuild: start-up: //p' "$work/version.log")

echo ">> kiwi build of examples/debian-tarball through boxbuild" >&2
t0=$(now)
"$boxbuild" --no-accel --box debian --arch "$arch" -- --description "$here/examples/debian-tarball" \
  --target-dir "$work/through-boxbuild" >"$work/boxbuild.log" 2>&1 ||
  { tail -n 30 "$work/boxbuild.log" >&2; exit 1; }
boxbuild_s=$(since "$t0")
tarball=$(ls "$work"/through-boxbuild/*.tar.xz | head -n1)
tarball_mib=$(( $(stat -c %s "$tarball") / 1048576 ))

container_row="| the same build with \`--container\` | not run: podman is not installed |"
container_version_row=""
container_s=""
if command -v podman >/dev/null && [ "$arch" = "$(uname -m)" ]; then
  echo ">> kiwi-ng --version and the kiwi build with --container" >&2
  # The first --container run of a box version unpacks its root file system (once).
  "$boxbuild" -q --container --box debian -- --description "$here/examples/debian-tarball" \
    --target-dir "$work/unpack-container" --version >/dev/null 2>&1 || true
  t0=$(now)
  "$boxbuild" -v --container --box debian -- --description "$here/examples/debian-tarball" \
    --target-dir "$work/version-container" --version >"$work/version-container.log" 2>&1
  cversion_s=$(printf '%.1f' "$(echo "$(now) - $t0" | bc -l)")
  cstarted_s=$(sed -n 's/.*start-up: .*builder at \([0-9.]*\)s$/\1/p' "$work/version-container.log")
  container_version_row="| the same with \`--container\`, root file system already unpacked: \`kiwi-ng --version\` started / whole run | $cstarted_s s / $cversion_s s |"
  t0=$(now)
  if "$boxbuild" --container --box debian -- --description "$here/examples/debian-tarball" \
      --target-dir "$work/in-container" >"$work/container.log" 2>&1; then
    container_s=$(since "$t0")
    mode=rootless; [ "$(id -u)" = 0 ] && mode=privileged
    container_row="| the same build with \`--container\` ($mode, native CPU) | $(minutes "$container_s") |"
  else
    container_row="| the same build with \`--container\` | failed: $(tail -n 1 "$work/container.log") |"
  fi
fi

host_s=""
host_row="| the same kiwi build on the host (root, kiwi $kiwi_version in a venv) | not run: needs root and an $arch host |"
if [ "$(id -u)" = 0 ] && [ "$arch" = "$(uname -m)" ]; then
  # What kiwi needs on the host for this build beyond Python (the box has it built in).
  for tool in rsync; do
    command -v "$tool" >/dev/null ||
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$tool" >&2
  done
  venv=$here/target/kiwi-venv
  [ -x "$venv/bin/kiwi-ng" ] || { python3 -m venv "$venv" && "$venv/bin/pip" install -q "kiwi==$kiwi_version"; } >&2
  echo ">> the same kiwi build on the host" >&2
  t0=$(now)
  if "$venv/bin/kiwi-ng" system build --description "$here/examples/debian-tarball" \
      --target-dir "$work/on-host" >"$work/host.log" 2>&1; then
    host_s=$(since "$t0")
    host_row="| the same kiwi build on the host (root, kiwi $kiwi_version in a venv, native CPU) | $(minutes "$host_s") |"
  else
    host_row="| the same kiwi build on the host | failed: $(tail -n 1 "$work/host.log") |"
  fi
fi

ratios=""
if [ -n "$container_s" ] && [ "$container_s" -gt 0 ]; then
  ratios="With \`--container\` the build took $(echo "scale=1; $boxbuild_s / $container_s" | bc -l)x less time than in the emulated VM"
  if [ -n "$host_s" ] && [ "$host_s" -gt 0 ]; then
    pct=$(echo "scale=0; ($container_s - $host_s) * 100 / $host_s" | bc -l)
    if [ "$pct" -ge 0 ]; then
      ratios="$ratios, and $pct% more than kiwi run natively on the host"
    else
      ratios="$ratios, and ${pct#-}% less than kiwi run natively on the host"
    fi
  fi
  ratios="$ratios."
fi

cat <<MD
## The Debian kiwi box ($arch), one run each

| figure | value |
|---|---|
| box build (\`boxes/debian/build.sh\`: mmdebstrap, kiwi $kiwi_version from PyPI, initrd, qcow2) | $(minutes "$box_build_s") |
| box size: compressed qcow2 disk (virtual size $virtual_gib) / kernel + initrd | $disk_mib MiB / $kernel_mib MiB |
| QEMU started -> agent ready (TCG) | $ready_s s |
| boxbuild invoked -> \`kiwi-ng --version\` started / whole run | $started_s s / $version_s s |
$container_version_row
| kiwi build of \`examples/debian-tarball\` through boxbuild (TCG, 2 vCPUs, scratch disk) | $(minutes "$boxbuild_s") |
$container_row
$host_row

$ratios

The start-up phases of the \`kiwi-ng --version\` run in the VM (\`-v\`): $phases

The root tarball it builds is $tarball_mib MiB. Under TCG every instruction of apt, dpkg
and xz is emulated, which is what the difference to the native build measures; with KVM
the box runs at near-native speed. Where kiwi's root tree lives matters as much: the
same build with the root tree on a 9p share took 36 min on this machine (docs/debian-box.md),
against the scratch disk used here. With \`--container\` nothing is emulated: the build runs
on the host's CPU, with kiwi's root tree in the run's scratch directory on the host's disk.
MD
