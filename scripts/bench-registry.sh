#!/usr/bin/env bash
# Benchmarks boxes through an OCI registry and prints a Markdown section (scripts/bench.sh
# puts it into docs/benchmarks.md): the Debian kiwi box pushed to a local registry
# (Debian's docker-registry on 127.0.0.1), then pulled into an empty cache by boxbuild and,
# for comparison, copied by skopeo to a directory; wall time and peak RSS of each. Then
# cache hits by tag and by digest (median of RUNS, default 5).
#
#   scripts/bench-registry.sh [RUNS]
#
# The box: $BOXBUILD_TEST_DEBIAN_BOX_DIR, else target/test-boxes/debian-ARCH (built by
# boxes/debian/build.sh when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
cargo build --release -q
bin=$PWD/target/release/boxbuild
boxdir=${BOXBUILD_TEST_DEBIAN_BOX_DIR:-$PWD/target/test-boxes/debian-$(uname -m)}
[ -f "$boxdir/catalog.toml" ] || boxes/debian/build.sh "$boxdir" >&2
for tool in docker-registry skopeo /usr/bin/time; do
  command -v "$tool" >/dev/null || { echo "bench-registry.sh needs $tool (scripts/install.sh installs it)" >&2; exit 1; }
done
work=$(mktemp -d)
registry_pid=""
cleanup() {
  [ -n "$registry_pid" ] && kill "$registry_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
addr=127.0.0.1:$port
cat >"$work/registry.yml" <<YML
version: 0.1
storage:
  filesystem:
    rootdirectory: $work/storage
http:
  addr: $addr
log:
  level: error
  accesslog:
    disabled: true
YML
docker-registry serve "$work/registry.yml" >/dev/null 2>&1 &
registry_pid=$!
for _ in $(seq 100); do curl -sf "http://$addr/v2/" >/dev/null && break; sleep 0.1; done
printf '[[registry]]\nlocation = "%s"\ninsecure = true\n' "$addr" >"$work/registries.conf"
export CONTAINERS_REGISTRIES_CONF=$work/registries.conf BOXBUILD_CONFIG=$boxdir/catalog.toml
export XDG_CONFIG_HOME=$work/config XDG_CACHE_HOME=$work/cache
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$boxdir/catalog.toml" | head -n1)
ref=oci://$addr/boxes/debian:$version
box_size=$(du -sh --apparent-size "$boxdir" | cut -f1)

timed() { # COMMAND...: prints "SECONDS PEAK_RSS_KIB"
  /usr/bin/time -f '%e %M' -o "$work/time" "$@" >/dev/null 2>&1
  cat "$work/time"
}
median() { sort -n | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else printf "%.3f\n", (a[NR/2]+a[NR/2+1])/2}'; }

echo ">> pushing the Debian box ($box_size) to $ref" >&2
read -r push_s push_kib < <(timed "$bin" box push "debian@$version" "$ref")
digest=$("$bin" box -q push "debian@$version" "$ref" | grep -o 'sha256:[0-9a-f]*')
echo ">> boxbuild pull into an empty cache" >&2
read -r pull_s pull_kib < <(timed "$bin" box fetch "$ref")
echo ">> skopeo copy to a directory" >&2
read -r skopeo_s skopeo_kib < <(timed skopeo copy --src-tls-verify=false "docker://$addr/boxes/debian:$version" "dir:$work/skopeo-dir")
hits() { # REF: median seconds of a cached 'box fetch'
  for _ in $(seq "$runs"); do timed "$bin" box fetch "$1" | cut -d' ' -f1; done | median
}
"$bin" box -q fetch "oci://$addr/boxes/debian@$digest" # resolves the digest once
echo ">> cache hits" >&2
tag_hit=$(hits "$ref")
digest_hit=$(hits "oci://$addr/boxes/debian@$digest")
requests_note="no request reaches the registry (tests/oci_registry.rs counts them)"

cat <<MD
## Boxes through an OCI registry

The Debian kiwi box ($box_size: kernel, initrd, disk) in a local registry (Debian's
docker-registry on 127.0.0.1, plain HTTP), one run each (\`scripts/bench-registry.sh\`):

| operation | wall time | peak RSS |
|---|---|---|
| \`boxbuild box push\` (3 layers + config, index) | ${push_s} s | ${push_kib} KiB |
| \`boxbuild box fetch\` into an empty cache (verified, installed) | ${pull_s} s | ${pull_kib} KiB |
| \`skopeo copy docker://... dir:...\` (the same blobs) | ${skopeo_s} s | ${skopeo_kib} KiB |
| cache hit by tag, median of $runs | ${tag_hit} s | |
| cache hit by digest, median of $runs | ${digest_hit} s | |

A pull streams each blob to disk, hashing it as it arrives; skopeo does the same work
(plus its own digest checks) without installing a box. On a hit $requests_note.
MD
