#!/usr/bin/env bash
# Benchmark of the package cache kept across builds (docs/cache.md, "Packages kept across
# builds"): examples/debian-tarball on the Debian box, a first build with an empty cache
# and a second one reusing it, in the VM (TCG, 9p or the backend in $BOXBUILD_E2E_ARGS) and
# with --container; beside them a --container build with --no-package-cache, which is what
# every build is without the cache (kiwi 11's boxbuild starts each box with an empty
# /var/cache/kiwi). Packages downloaded are boxbuild-kiwi's count; bytes downloaded are
# what the build added to the cache. One run each. Prints a Markdown section; scripts/bench.sh
# puts it into docs/benchmarks.md (BENCH_PACKAGES=0 skips it, BENCH_PACKAGES_FILE reuses one).
#
#   scripts/bench-packages.sh [vm] [container]     (default: both)
#
# The box: $BOXBUILD_TEST_DEBIAN_BOX_DIR, else the one registered as 'debian'.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH=$HOME/.cargo/bin:$PATH
(cd "$here" && cargo build --release --locked -q)
boxbuild=$here/target/release/boxbuild
modes=("$@")
[ ${#modes[@]} -gt 0 ] || modes=(vm container)
work=$(mktemp -d "${TMPDIR:-/var/tmp}/bench-packages.XXXXXX")
trap 'rm -rf "$work"' EXIT
if [ -n "${BOXBUILD_TEST_DEBIAN_BOX_DIR:-}" ]; then
  export BOXBUILD_CONFIG=$BOXBUILD_TEST_DEBIAN_BOX_DIR/catalog.toml
fi
read -r -a extra <<<"${BOXBUILD_E2E_ARGS:-}"
now() { date +%s.%N; }
since() { printf '%.0f' "$(echo "$(now) - $1" | bc -l)"; }
minutes() { printf '%d min %02d s' $(($1 / 60)) $(($1 % 60)); }
mib() { printf '%.1f' "$(echo "$1 / 1048576" | bc -l)"; }
cache_bytes() { # bytes of packages in the package cache under $1
  find "$1/packages" -type f -name '*.deb' -printf '%s\n' 2>/dev/null | awk '{s+=$1} END {print s+0}'
}

# NAME CACHE FLAGS...: one build; prints "seconds downloaded bytes-added"
build() {
  local name=$1 cache=$2 t0 before secs line count
  shift 2
  mkdir -p "$cache"
  before=$(cache_bytes "$cache")
  t0=$(now)
  BOXBUILD_CACHE_DIR=$cache "$boxbuild" --no-update-check --box debian "$@" kiwi \
    --description "$here/examples/debian-tarball" --target-dir "$work/$name" \
    >"$work/$name.log" 2>&1 ||
    { echo "$name failed:" >&2; tail -n 30 "$work/$name.log" >&2; exit 1; }
  secs=$(since "$t0")
  line=$(grep -m1 'boxbuild-kiwi: package cache:' "$work/$name.log" || true)
  count=$(sed -n 's/.* \([0-9]*\) downloaded.*/\1/p' <<<"$line")
  echo "$secs ${count:-?} $(($(cache_bytes "$cache") - before))"
}

rows=()
row() { # LABEL "secs count bytes"
  local secs count bytes
  read -r secs count bytes <<<"$2"
  rows+=("| $1 | $(minutes "$secs") | $count | $(mib "$bytes") |")
}
for mode in "${modes[@]}"; do
  case $mode in
    container)
      # The box's root file system is unpacked once per box version, before timing.
      BOXBUILD_CACHE_DIR=$work/c-cache "$boxbuild" -q --no-update-check --container --box debian \
        -- --description "$here/examples/debian-tarball" --target-dir "$work/unpack" --version \
        >/dev/null 2>&1 || true
      cp -a "$work/c-cache" "$work/n-cache"
      echo ">> --container, --no-package-cache" >&2
      none=$(build c-none "$work/n-cache" --container --no-package-cache)
      read -r s _ _ <<<"$none"
      # Nothing was kept: the bytes are those of the first build below.
      echo ">> --container, first build (empty cache)" >&2
      first=$(build c-first "$work/c-cache" --container)
      echo ">> --container, second build" >&2
      second=$(build c-second "$work/c-cache" --container)
      read -r _ c b <<<"$first"
      row "\`--container\`, \`--no-package-cache\` (every build, as kiwi 11's boxbuild)" "$s $c $b"
      row "\`--container\`, first build (empty cache)" "$first"
      row "\`--container\`, second build" "$second"
      ;;
    vm)
      echo ">> VM, first build (empty cache)" >&2
      first=$(build v-first "$work/v-cache" --no-accel "${extra[@]}")
      echo ">> VM, second build" >&2
      second=$(build v-second "$work/v-cache" --no-accel "${extra[@]}")
      row "VM (TCG${extra[*]:+, ${extra[*]}}), first build (empty cache)" "$first"
      row "VM (TCG${extra[*]:+, ${extra[*]}}), second build" "$second"
      ;;
    *) echo "unknown mode $mode (vm, container)" >&2; exit 2 ;;
  esac
done
same=yes
for log in "$work"/*-second.log; do
  [ -e "$log" ] || continue
  grep -q ' 0 downloaded' "$log" || same=no
done

cat <<MD
## Package cache (\`scripts/bench-packages.sh\`)

\`examples/debian-tarball\` in the Debian box, one run each on $(nproc) cores; wall time from
invoking boxbuild to its exit. Packages downloaded: boxbuild-kiwi's count (what apt fetched
from the mirror); MiB: the packages the build added to the cache, i.e. what it downloaded.

| build | wall time | packages downloaded | MiB downloaded |
|---|---|---|---|
$(printf '%s\n' "${rows[@]}")

Every second build downloaded nothing: $same. The mirror here is a local one; over the
internet the downloads take longer and the cache saves more.
MD
