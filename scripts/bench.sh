#!/usr/bin/env bash
# Benchmarks boxbuild on the tiny box and writes docs/benchmarks.md.
#
#   scripts/bench.sh [RUNS]
#
# Figures (median of RUNS, default 7):
# - start-up: from invoking boxbuild to the builder starting in the guest (boxbuild -v);
# - no-op build: wall time of a whole build whose builder does nothing;
# - peak memory (VmHWM) of the boxbuild process and of QEMU during a no-op build;
# - the box cache (scripts/bench-cache.sh): cache hit vs re-hash, download throughput;
# - sharing (scripts/bench-sharing.sh): large-file and small-file speed per backend;
# - the Debian kiwi box (scripts/bench-kiwi.sh): box build, boot, a real kiwi build through
#   boxbuild and on the host (slow: tens of minutes under TCG; BENCH_KIWI=0 skips it);
# - KIWI's Python plugin beside boxbuild on the same plugin-protocol box
#   (scripts/bench-plugin.sh);
# - the Debian box through a local OCI registry: push, pull vs skopeo copy, cache hits
#   (scripts/bench-registry.sh).
# - cross-architecture builds (scripts/bench-cross.sh): the example for aarch64 in the VM,
#   with --container through qemu-user, and the native build (slow; BENCH_CROSS=0 skips it).
# - the package cache kept across builds (scripts/bench-packages.sh): first and second
#   build, VM and --container, packages and bytes downloaded (slow; BENCH_PACKAGES=0);
# - stashes and stackbuild (scripts/bench-stash.sh; BENCH_STASH=0 skips it);
# - boxbuild's own container image (scripts/bench-image.sh; BENCH_IMAGE=0 skips it).
# BENCH_NAME_FILE=FILE (NAME: KIWI, CROSS, PACKAGES, STASH, IMAGE) takes that section from an
# earlier `scripts/bench-name.sh > FILE` instead of measuring it again.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-7}
cargo build --release -q
bin=$PWD/target/release/boxbuild
boxdir=${BOXBUILD_TEST_BOX_DIR:-$PWD/target/test-boxes/tiny-$(uname -m)}
[ -f "$boxdir/catalog.toml" ] || boxes/tiny/build.sh "$boxdir"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/desc"
export BOXBUILD_CONFIG=$boxdir/catalog.toml

median() { sort -n | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else printf "%.3f\n", (a[NR/2]+a[NR/2+1])/2}'; }

bench_accel() { # FLAGS...: median start-up and total time of a no-op build
  local startup=() total=()
  for i in $(seq "$runs"); do
    rm -rf "$work/out"
    local t0 t1 log
    t0=$(date +%s.%N)
    log=$("$bin" -v "$@" --box tiny -- \
      --description "$work/desc" --target-dir "$work/out" 2>&1)
    t1=$(date +%s.%N)
    startup+=("$(echo "$log" | sed -n 's/.*start-up: .*builder at \([0-9.]*\)s$/\1/p')")
    total+=("$(printf '%.2f' "$(echo "$t1 - $t0" | bc -l)")")
  done
  printf '%s\n' "${startup[@]}" | median
  printf '%s\n' "${total[@]}" | median
}

# Peak RSS (VmHWM, KiB) of boxbuild and of its QEMU, sampled from /proc during one build.
peak_rss() {
  rm -rf "$work/out"
  "$bin" -q --no-accel --box tiny -- --description "$work/desc" --target-dir "$work/out" &
  local pid=$! host=0 qemu=0 q rss
  while kill -0 "$pid" 2>/dev/null; do
    rss=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
    [ "${rss:-0}" -gt "$host" ] && host=$rss
    for q in $(pgrep -P "$pid" -f qemu-system || true); do
      rss=$(awk '/VmHWM/ {print $2}' "/proc/$q/status" 2>/dev/null || echo 0)
      [ "${rss:-0}" -gt "$qemu" ] && qemu=$rss
    done
    sleep 0.05
  done
  wait "$pid" || true
  echo "$host $qemu"
}

command -v bc >/dev/null || { echo "bench.sh needs bc (apt-get install bc)" >&2; exit 1; }

echo ">> tiny box, TCG, $runs runs" >&2
mapfile -t tcg < <(bench_accel --no-accel)
# The other architecture's tiny box, emulated (aarch64 on x86_64 and the way back).
case "$(uname -m)" in aarch64) foreign=x86_64 ;; *) foreign=aarch64 ;; esac
foreign_dir=$PWD/target/test-boxes/tiny-$foreign
[ -f "$foreign_dir/catalog.toml" ] || boxes/tiny/build.sh "$foreign_dir" --arch "$foreign" >&2
echo ">> tiny $foreign box, TCG, $runs runs" >&2
mapfile -t cross < <(BOXBUILD_CONFIG=$foreign_dir/catalog.toml bench_accel --no-accel --arch "$foreign")
container=("not run: no podman" "")
if command -v podman >/dev/null; then
  echo ">> tiny box, --container, $runs runs" >&2
  "$bin" -q --container --box tiny -- --description "$work/desc" --target-dir "$work/out" >/dev/null 2>&1 || true
  mapfile -t container < <(bench_accel --container)
  container[0]="${container[0]} s"
  container[1]="${container[1]} s"
fi
# One more run of each with -v: its start-up phases, as a user sees them.
phases() {
  rm -rf "$work/out"
  "$bin" -v "$@" -- --description "$work/desc" --target-dir "$work/out" 2>&1 |
    sed -n 's/^boxbuild: start-up: //p'
}
phases_tiny=$(phases --no-accel --box tiny)
phases_cross=$(BOXBUILD_CONFIG=$foreign_dir/catalog.toml phases --no-accel --box tiny --arch "$foreign")
read -r host_peak qemu_peak < <(peak_rss)
accel_line=$("$bin" --box tiny -- --description "$work/desc" --target-dir "$work/out" 2>&1 | grep -m1 "using TCG\|kvm)" || true)

cpu=$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)
qemu_version=$(qemu-system-$(uname -m) --version | head -n1)
box_size=$(du -sh "$boxdir" | cut -f1)
cache_section=$(scripts/bench-cache.sh 2048 "$(( runs < 3 ? runs : 3 ))")
sharing_section=$(scripts/bench-sharing.sh)
plugin_section=$(scripts/bench-plugin.sh 5)
registry_section=$(scripts/bench-registry.sh 5)
# SECTION NAME SCRIPT ARGS...: a section measured by SCRIPT, or taken from $BENCH_NAME_FILE,
# or skipped with BENCH_NAME=0.
section() {
  local name=$1 file skip
  shift
  file=BENCH_${name}_FILE skip=BENCH_${name}
  if [ -n "${!file:-}" ]; then
    cat "${!file}"
  elif [ "${!skip:-1}" != 0 ]; then
    # These name their own boxes (the Debian box, or the tiny one by its dir).
    env -u BOXBUILD_CONFIG "$@"
  else
    echo "(not measured in this run: $skip=0)"
  fi
}
cross_section=$(section CROSS scripts/bench-cross.sh)
kiwi_section=$(section KIWI scripts/bench-kiwi.sh)
packages_section=$(section PACKAGES scripts/bench-packages.sh)
stash_section=$(section STASH scripts/bench-stash.sh)
image_section=$(section IMAGE scripts/bench-image.sh)
cat >docs/benchmarks.md <<MD
# Benchmarks

Written by \`scripts/bench.sh\` on $(date -u +%Y-%m-%d).
Machine: $(nproc) CPUs ($cpu), $(free -g | awk '/Mem:/ {print $2}') GiB, $(uname -sr), $qemu_version.
Accelerator on this machine: ${accel_line:-n/a}

## Spine: tiny box ($box_size), median of $runs runs

| figure | $(uname -m) box, TCG | $foreign box, TCG | $(uname -m) box, \`--container\` |
|---|---|---|---|
| boxbuild invoked -> builder started in the guest | ${tcg[0]} s | ${cross[0]} s | ${container[0]} |
| no-op build, total wall time | ${tcg[1]} s | ${cross[1]} s | ${container[1]} |
| peak RSS of boxbuild | ${host_peak} KiB | | |
| peak RSS of QEMU (256 MiB guest) | ${qemu_peak} KiB | | |

The start-up figure covers catalog lookup, argument checks, the overlay, QEMU start, the
guest kernel's boot, the initrd, and the agent's greeting and mounts. Most of it is the
emulated kernel boot, which varies with the host's load (2.9 to 4.9 s on this machine on
one day). The phases of one run each (\`-v\`; docs/design.md, "Where the start-up goes"):

- $(uname -m) box: $phases_tiny
- $foreign box: $phases_cross

With \`--container\` the same box's root file system (unpacked by the warm-up
run before) starts under podman instead: no kernel boots.

$cache_section

$sharing_section

$kiwi_section

$packages_section

$stash_section

$cross_section

$image_section

$registry_section

## KIWI's Python plugin and boxbuild on the same box

The same no-op build on \`tiny-plugin\`, a box speaking the plugin's guest protocol and
shipping Debian's compressed kernel (a bzImage) as the plugin's own boxes do, both with the
box already cached and no update check; five runs of each, alternating
(\`scripts/bench-plugin.sh\`):

$plugin_section

The plugin's time includes starting kiwi's Python CLI, extracting the kernel and initrd
from the box's tarball again, the kernel decompressing itself under emulation, and QEMU's
own exit. boxbuild boots the uncompressed kernel it took out of the bzImage once, when the
box was fetched (docs/booting.md).
MD
cat docs/benchmarks.md
