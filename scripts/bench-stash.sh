#!/usr/bin/env bash
# Benchmark of stashes (docs/stash.md) on the Debian kiwi box with --container: the
# example build (examples/debian-tarball) with --stash beside the same build without,
# a stackbuild from the stash alone (--no-network) beside the original build, the
# stash's size beside the root tarball's, and the layer a second stash of the name adds;
# then the stash pushed to a registry (Debian's docker-registry on 127.0.0.1, plain HTTP)
# and stackbuilds from its registry reference, first pulling into the registry cache,
# then from the cache. Then the VM path (QEMU; KVM where it works, else TCG): the build
# from the repositories with --stash beside a stackbuild from that stash alone
# (BENCH_STASH_VM=0 skips it: under TCG each VM run takes 10-20 minutes). One run each.
# Prints a Markdown section; scripts/bench.sh can put it into docs/benchmarks.md
# (BENCH_STASH_FILE, as BENCH_KIWI_FILE).
#
#   scripts/bench-stash.sh
#
# The box: $BOXBUILD_TEST_DEBIAN_BOX_DIR, else the one registered as 'debian'.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH=$HOME/.cargo/bin:$PATH
(cd "$here" && cargo build --release --locked -q)
boxbuild=$here/target/release/boxbuild
work=$(mktemp -d "${TMPDIR:-/var/tmp}/bench-stash.XXXXXX")
trap 'rm -rf "$work"' EXIT
export BOXBUILD_STASH_DIR=$work/stashes
if [ -n "${BOXBUILD_TEST_DEBIAN_BOX_DIR:-}" ]; then
  export BOXBUILD_CONFIG=$BOXBUILD_TEST_DEBIAN_BOX_DIR/catalog.toml
fi
desc=$here/examples/debian-tarball
now() { date +%s.%N; }
since() { printf '%.0f' "$(echo "$(now) - $1" | bc -l)"; }
mib() { printf '%.1f' "$(echo "$1 / 1048576" | bc -l)"; }
run_box() { # LOG ARGS...: one boxbuild run, its seconds on stdout
  local log=$1 t0; shift
  t0=$(now)
  "$boxbuild" -q --box debian "$@" >"$work/$log" 2>&1 ||
    { tail -n 30 "$work/$log" >&2; exit 1; }
  since "$t0"
}
run() { local log=$1; shift; run_box "$log" --container "$@"; }
# The first --container run of a box version unpacks its root file system (once).
"$boxbuild" -q --container --box debian -- --description "$desc" --target-dir "$work/unpack" \
  --version >/dev/null 2>&1 || true

echo ">> the example build, without and with --stash" >&2
plain_s=$(run plain.log -- --description "$desc" --target-dir "$work/plain")
stash_s=$(run stash1.log --stash bench:1 -- --description "$desc" --target-dir "$work/t1")
echo ">> a second stash of the name" >&2
stash2_s=$(run stash2.log --stash bench:2 -- --description "$desc" --target-dir "$work/t2")
echo ">> stackbuild from the stash, no network" >&2
stack_s=$(run stack.log --no-network stackbuild --stash bench:2 --target-dir "$work/t3")

echo ">> stash push to a registry on 127.0.0.1, stackbuilds from it" >&2
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
registry=127.0.0.1:$port
printf 'version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: %s\nlog:\n  level: error\n' \
  "$work/registry" "$registry" >"$work/registry.yml"
docker-registry serve "$work/registry.yml" >/dev/null 2>&1 &
registry_pid=$!
trap 'kill $registry_pid 2>/dev/null; rm -rf "$work"' EXIT
printf '[[registry]]\nlocation = "%s"\ninsecure = true\n' "$registry" >"$work/registries.conf"
export CONTAINERS_REGISTRIES_CONF=$work/registries.conf
for _ in $(seq 50); do (echo >/dev/tcp/127.0.0.1/"$port") 2>/dev/null && break; sleep 0.1; done
t0=$(now)
"$boxbuild" -q stash push bench:2 "oci://$registry/stashes/bench" >"$work/push.log" 2>&1 ||
  { cat "$work/push.log" >&2; exit 1; }
push_s=$(since "$t0")
pushed=$(du -sb "$work/registry" | cut -f1)
pull_s=$(run pull.log --no-network stackbuild --stash "oci://$registry/stashes/bench:2" --target-dir "$work/t4")
cached_s=$(run cached.log --no-network stackbuild --stash "oci://$registry/stashes/bench:2" --target-dir "$work/t5")
same_registry=no
cmp -s "$work"/t1/*.packages "$work"/t4/*.packages && same_registry=yes

vm_section=""
if [ "${BENCH_STASH_VM:-1}" != 0 ]; then
  echo ">> the VM path: the build with --stash, stackbuild from the stash" >&2
  vm_stash_s=$(run_box vm-stash.log --stash vmbench:1 -- --description "$desc" --target-dir "$work/v2")
  vm_stack_s=$(run_box vm-stack.log --no-network stackbuild --stash vmbench:1 --target-dir "$work/v3")
  vm_same=no
  cmp -s "$work"/v2/*.packages "$work"/v3/*.packages && vm_same=yes
  vm_section="
In a VM (QEMU with the accelerator boxbuild's probe chose, the default share backend), one run each:

| run | time |
|---|---|
| the build from the repositories, with \`--stash vmbench:1\` | ${vm_stash_s} s |
| \`stackbuild --stash vmbench:1 --no-network\` | ${vm_stack_s} s |

The VM stackbuild's package list equals the VM build's: $vm_same."
fi

layout=$work/stashes/bench
tarball=$(stat -c %s "$work"/t1/*.tar.xz)
first=$(skopeo inspect oci:"$layout":1 | python3 -c 'import json,sys; print(json.load(sys.stdin)["Layers"][0])')
second=$(skopeo inspect oci:"$layout":2 | python3 -c 'import json,sys; print(json.load(sys.stdin)["Layers"][-1])')
layer_size() { stat -c %s "$layout/blobs/sha256/${1#sha256:}"; }
stash_total=$(du -sb "$layout" | cut -f1)
same=no
cmp -s "$work"/t1/*.packages "$work"/t3/*.packages && same=yes

cat <<MD
## Stashes (\`scripts/bench-stash.sh\`)

\`examples/debian-tarball\` in the Debian box with \`--container\`, one run each, on
$(nproc) cores; wall time from invoking boxbuild to its exit.

| run | time |
|---|---|
| the build | ${plain_s} s |
| the build with \`--stash bench:1\` (first layer) | ${stash_s} s |
| the build with \`--stash bench:2\` (a second layer) | ${stash2_s} s |
| \`stackbuild --stash bench:2 --no-network\` (kiwi \`system create\` on the stash) | ${stack_s} s |

| size | MiB |
|---|---|
| root tarball (\`.tar.xz\`, kiwi's output) | $(mib "$tarball") |
| first layer of the stash (tar+gzip, umoci) | $(mib "$(layer_size "$first")") |
| layer added by the second stash of a rebuild | $(mib "$(layer_size "$second")") |
| the stash's layout with both versions | $(mib "$stash_total") |

The stackbuild's package list equals the original build's: $same.

Through a registry (Debian's docker-registry on 127.0.0.1, plain HTTP):

| run | time |
|---|---|
| \`stash push bench:2 oci://…/stashes/bench\` (both layers, $(mib "$pushed") MiB in the registry) | ${push_s} s |
| \`stackbuild --stash oci://…/stashes/bench:2 --no-network\`, pulled into the registry cache | ${pull_s} s |
| the same stackbuild again, from the cache (one manifest request) | ${cached_s} s |

The package list of the stackbuild from the registry equals the original build's: $same_registry.
$vm_section
MD
