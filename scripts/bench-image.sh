#!/usr/bin/env bash
# Benchmarks boxbuild's container image (docs/container-image.md) and prints a Markdown
# section: a no-op build's start-up in the container against the same build on the host
# (the tiny box, TCG), N tiny-box builds in parallel containers (N = 1, 2, 4) with their
# throughput and the peak memory of each container, and the image's size.
#
#   scripts/bench-image.sh [IMAGE]     (default: the one scripts/build-image.sh builds)
#
# BOXBUILD_BENCH_RUNS   start-ups measured per side (default 3; the median is shown)
# BOXBUILD_TEST_BOX_DIR the tiny box (default /var/lib/boxbuild/boxes/tiny-ARCH)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
arch=$(uname -m)
box=${BOXBUILD_TEST_BOX_DIR:-/var/lib/boxbuild/boxes/tiny-$arch}
runs=${BOXBUILD_BENCH_RUNS:-3}
image=${1:-$("$here/scripts/build-image.sh" 2>/dev/null | tail -n1)}
boxbuild=${BOXBUILD:-$here/target/release/boxbuild}
[ -x "$boxbuild" ] || (cd "$here" && cargo build --release --locked -q)
work=$(mktemp -d "${TMPDIR:-/var/tmp}/boxbuild-bench-image.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/desc" "$work/config" "$work/out"
chmod 0777 "$work/out"
echo true >"$work/desc/script.sh"
sed "s|$box|/boxes/tiny|g" "$box/catalog.toml" >"$work/config/catalog.toml"
# As tests/image.rs runs it: runc (crun refuses v1/hybrid cgroups), no capabilities.
podman=(podman --runtime runc run --cap-drop=ALL --security-opt=no-new-privileges
  --read-only --ulimit=nofile=4096:4096 --ulimit=nproc=32768:32768 --network none
  -v "$box:/boxes/tiny:ro" -v "$work/config:/config:ro" -v "$work/desc:/desc:ro"
  -v "$work/out:/out" -e BOXBUILD_CONFIG=/config/catalog.toml)

now() { date +%s.%N; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f\n", b - a}'; }

host_once() {
  local start; start=$(now)
  BOXBUILD_CONFIG=$box/catalog.toml "$boxbuild" -q --no-accel --box tiny -- \
    --description "$work/desc" --target-dir "$work/out/host" >/dev/null 2>&1
  secs "$start" "$(now)"
}
container_once() {
  local start; start=$(now)
  "${podman[@]}" --rm "$image" -q --box tiny -- --description /desc --target-dir /out/c >/dev/null 2>&1
  secs "$start" "$(now)"
}

# The peak memory of a container's cgroup (cgroups v2 memory.peak, else v1
# memory.max_usage_in_bytes), polled until it ends; MiB.
peak_mib() {
  local id=$1 path file peak=0 v
  path=$(podman inspect --format '{{.State.CgroupPath}}' "$id" 2>/dev/null || true)
  for file in "/sys/fs/cgroup$path/memory.peak" "/sys/fs/cgroup/memory$path/memory.max_usage_in_bytes"; do
    [ -r "$file" ] || continue
    while [ "$(podman inspect --format '{{.State.Running}}' "$id" 2>/dev/null)" = true ]; do
      v=$(cat "$file" 2>/dev/null || echo 0)
      [ "$v" -gt "$peak" ] && peak=$v
      sleep 0.2
    done
    break
  done
  echo $((peak / 1048576))
}

parallel() {
  local n=$1 i ids=() start end peaks=()
  start=$(now)
  for i in $(seq "$n"); do
    ids+=("$("${podman[@]}" -d "$image" -q --box tiny -- --description /desc --target-dir "/out/p$n-$i")")
  done
  for id in "${ids[@]}"; do peaks+=("$(peak_mib "$id")"); done
  for id in "${ids[@]}"; do
    [ "$(podman wait "$id")" = 0 ] || { echo "a build failed: $(podman logs "$id" 2>&1 | tail -n3)" >&2; exit 1; }
  done
  end=$(now)
  podman rm -f "${ids[@]}" >/dev/null
  local wall; wall=$(secs "$start" "$end")
  printf '| %d | %s | %s | %s |\n' "$n" "$wall" \
    "$(awk -v n="$n" -v w="$wall" 'BEGIN {printf "%.1f", n * 60 / w}')" \
    "$(printf '%s\n' "${peaks[@]}" | sort -n | tail -n1)"
}

host=$(for _ in $(seq "$runs"); do host_once; done | median)
container=$(for _ in $(seq "$runs"); do container_once; done | median)
size=$(podman image inspect --format '{{.Size}}' "$image")

echo "## Container image"
echo
echo "\`scripts/bench-image.sh\`: boxbuild's image ($image), the tiny box under TCG, a no-op"
echo "build (\`true\`); $(nproc) host cores. Seconds from the command to its exit."
echo
echo "| | seconds (median of $runs) |"
echo "|---|---|"
echo "| on the host | $host |"
echo "| in the container (\`podman run --rm\`, runc) | $container |"
echo
echo "| parallel containers | wall (s) | builds per minute | peak memory per container (MiB) |"
echo "|---|---|---|---|"
for n in 1 2 4; do parallel "$n"; done
echo
echo "Image size: $((size / 1048576)) MiB in podman's storage (uncompressed layers)."
