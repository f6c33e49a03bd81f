#!/usr/bin/env bash
# Benchmarks the box cache and prints a Markdown section (scripts/bench.sh puts it into
# docs/benchmarks.md).
#
#   scripts/bench-cache.sh [SIZE_MIB] [RUNS]
#
# Figures, on one box whose disk is SIZE_MIB (default 2048) of random bytes, served by
# python3's http.server on 127.0.0.1:
# - cache hit: 'boxbuild box fetch' on a cached box (what every build pays before QEMU
#   starts), against the Python plugin's per-run check: the sha256 of the box files,
#   computed with hashlib in the 8 KiB blocks kiwi's Checksum class reads;
# - download: 'boxbuild box fetch' into an empty cache (transfer + sha256 + install)
#   against curl alone and curl piped into sha256sum, on the same file and server.
set -euo pipefail
cd "$(dirname "$0")/.."
size_mib=${1:-2048}
runs=${2:-3}
cargo build --release -q
bin=$PWD/target/release/boxbuild
work=$(mktemp -d)
server_pid=""
trap '[ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null; rm -rf "$work"' EXIT

median() { sort -n | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else printf "%.3f\n", (a[NR/2]+a[NR/2+1])/2}'; }
seconds() { # runs "$@" and prints its wall time in seconds
  local t0 t1
  t0=$(date +%s.%N)
  "$@" >/dev/null 2>&1 || { echo "failed: $*" >&2; return 1; }
  t1=$(date +%s.%N)
  printf '%.3f\n' "$(echo "$t1 - $t0" | bc -l)"
}
timed_median() { # RUNS PREPARE-CMD CMD...: median wall time of CMD, PREPARE run before each
  local n=$1 prepare=$2 times=()
  shift 2
  for _ in $(seq "$n"); do
    eval "$prepare"
    times+=("$(seconds "$@")")
  done
  printf '%s\n' "${times[@]}" | median
}

www=$work/www
mkdir -p "$www"
echo ">> writing a ${size_mib} MiB box disk" >&2
head -c $((size_mib * 1024 * 1024)) /dev/urandom >"$www/disk"
head -c $((8 * 1024 * 1024)) /dev/urandom >"$www/kernel"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
(cd "$www" && exec python3 -m http.server --bind 127.0.0.1 "$port" >/dev/null 2>&1) &
server_pid=$!
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$port/kernel" -o /dev/null && break; sleep 0.1; done

sum() { sha256sum "$1" | cut -d' ' -f1; }
cat >"$work/catalog.toml" <<TOML
[boxes.big]
builder = ["true"]
[[boxes.big.versions]]
version = "1"
arch = "$(uname -m)"
cmdline = "console=ttyS0"
kernel = { url = "http://127.0.0.1:$port/kernel", size = $(stat -c %s "$www/kernel"), sha256 = "$(sum "$www/kernel")" }
disk = { url = "http://127.0.0.1:$port/disk", size = $(stat -c %s "$www/disk"), sha256 = "$(sum "$www/disk")" }
TOML
export BOXBUILD_CONFIG=$work/catalog.toml BOXBUILD_CACHE_DIR=$work/cache NO_PROXY=127.0.0.1

echo ">> download: boxbuild, curl, curl | sha256sum ($runs runs each)" >&2
fetch_s=$(timed_median "$runs" 'rm -rf "$work/cache"' "$bin" box fetch -q big)
curl_s=$(timed_median "$runs" 'rm -f "$work/curl.out"' curl -s -o "$work/curl.out" "http://127.0.0.1:$port/disk")
rm -f "$work/curl.out"
curl_sum_s=$(timed_median "$runs" ':' bash -c "curl -s http://127.0.0.1:$port/disk | sha256sum")
rate() { echo "scale=0; ($size_mib + 8) / $1" | bc -l; }
rate_disk() { echo "scale=0; $size_mib / $1" | bc -l; }

echo ">> cache hit vs re-hash ($runs runs of the re-hash, 15 of the hit)" >&2
"$bin" box fetch -q big
hit_s=$(timed_median 15 ':' "$bin" box fetch -q big)
hit_rss=$( { /usr/bin/time -f '%M' "$bin" box fetch -q big; } 2>&1 | tail -n1)
cached_disk=$(find "$work/cache/boxes" -name disk)
cached_kernel=$(find "$work/cache/boxes" -name kernel)
cat >"$work/rehash.py" <<'PY'
import hashlib, sys
for name in sys.argv[1:]:
    digest = hashlib.sha256()
    with open(name, "rb") as f:
        for block in iter(lambda: f.read(digest.block_size * 128), b""):
            digest.update(block)
    digest.hexdigest()
PY
rehash_s=$(timed_median "$runs" ':' python3 "$work/rehash.py" "$cached_disk" "$cached_kernel")
verify_s=$(timed_median "$runs" ':' "$bin" box verify -q big)
fetch_rss=$( { rm -rf "$work/cache"; /usr/bin/time -f '%M' "$bin" box fetch -q big; } 2>&1 | tail -n1)
ms() { printf '%.1f' "$(echo "$1 * 1000" | bc -l)"; }

cat <<MD
## Box cache: a ${size_mib} MiB box disk plus an 8 MiB kernel, median of $runs runs

Served by python3's http.server on 127.0.0.1; files in the page cache (warm).

| figure | time | note |
|---|---|---|
| cache hit: \`boxbuild box fetch\` on a cached box | $(ms "$hit_s") ms | the check every build pays: stats and a small JSON read (15 runs), peak RSS ${hit_rss} KiB |
| Python plugin's per-run check: sha256 of the box files (hashlib) | ${rehash_s} s | what kiwi-boxed-plugin spends on every run with update checks on |
| \`boxbuild box verify\` (re-hash on demand) | ${verify_s} s | only when asked |
| download: \`boxbuild box fetch\` into an empty cache | ${fetch_s} s ($(rate "$fetch_s") MiB/s) | transfer + streaming sha256 + atomic install, peak RSS ${fetch_rss} KiB |
| download: \`curl -o\` | ${curl_s} s ($(rate_disk "$curl_s") MiB/s) | transfer only, disk file only |
| download: \`curl \| sha256sum\` | ${curl_sum_s} s ($(rate_disk "$curl_sum_s") MiB/s) | transfer + hash, nothing stored |
MD
