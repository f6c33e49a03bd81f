#!/usr/bin/env bash
# Benchmark: the same no-op build on the same box speaking the Python plugin's protocol
# (tiny-plugin with Debian's compressed kernel, as the plugin's own boxes have;
# boxes/tiny/build.sh --plugin --keep-vmlinuz), run by KIWI's Python plugin
# (`kiwi-ng system boxbuild`, kiwi from PyPI in a venv) and by boxbuild, side by side.
# Both use a box already in their cache and skip the update check; under TCG the plugin
# needs --no-accel --cpu max. Prints a Markdown table; scripts/bench.sh puts it into
# docs/benchmarks.md.
#
#   scripts/bench-plugin.sh [RUNS]     (default 5, alternating; the median is reported)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
runs=${1:-5}
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH=$HOME/.cargo/bin:$PATH
arch=$(uname -m)
kiwi_version=11.1.6
venv=$here/target/kiwi-venv
if [ ! -x "$venv/bin/kiwi-ng" ]; then
  echo ">> installing kiwi $kiwi_version from PyPI into $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "kiwi==$kiwi_version" >&2
fi
(cd "$here" && cargo build --release --locked -q)
boxbuild=$here/target/release/boxbuild
# The plugin's boxes ship Debian's or openSUSE's compressed kernel (on x86_64 a bzImage),
# so this one does too: the box keeps Debian's vmlinuz beside its own kernel.
box=$here/target/test-boxes/tiny-plugin-vmlinuz-$arch
[ -f "$box/catalog.toml" ] && [ -f "$box/vmlinuz" ] ||
  "$here/boxes/tiny/build.sh" "$box" --plugin --keep-vmlinuz >&2

work=$(mktemp -d "${TMPDIR:-/tmp}/bench-plugin.XXXXXX")
server=""
trap '[ -n "$server" ] && kill $server 2>/dev/null; rm -rf "$work"' EXIT
# The box in the plugin's layout, served over HTTP for boxbuild's first fetch; the
# plugin gets the same files placed in its cache.
www=$work/www/images
mkdir -p "$www" "$work/stage"
cp "$box/vmlinuz" "$work/stage/Tiny-Box.$arch-1.0.kernel"
cp "$box/initrd" "$work/stage/Tiny-Box.$arch-1.0.initrd"
tar -cJf "$www/Tiny-Box.$arch-Kernel.tar.xz" -C "$work/stage" .
cp "$box/disk.qcow2" "$www/Tiny-Box.$arch-System.qcow2"
(cd "$www" && for f in *.tar.xz *.qcow2; do sha256sum "$f" >"$f.sha256"; done)
echo '{}' >"$www/Tiny-Box.$arch-System.json"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
(cd "$work/www" && exec python3 -m http.server -b 127.0.0.1 "$port" >/dev/null 2>&1) &
server=$!
sleep 1
cat >"$work/kiwi_boxed_plugin.yml" <<YAML
box:
  - name: plugbox
    mem_mb: 256M
    processors: 1
    console: hvc0
    arch:
      - name: $arch
        cmdline:
          - root=/dev/vda
          - init=/sbin/plugin-init
          - panic=-1
          - quiet
        source: http://127.0.0.1:$port/images
        packages_file: Tiny-Box.$arch-System.json
        boxfiles:
          - Tiny-Box.$arch-Kernel.tar.xz
          - Tiny-Box.$arch-System.qcow2
        container: registry.invalid/none:latest
        use_initrd: true
YAML
plugin_cache=$work/kiwi-boxes
mkdir -p "$plugin_cache/plugbox" "$work/desc"
cp "$www"/* "$plugin_cache/plugbox/"
echo 'echo hello from the box' >"$work/desc/script.sh"
export KIWI_BOXED_PLUGIN_CFG=$work/kiwi_boxed_plugin.yml

now() { date +%s.%N; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

plugin_run() {
  KIWI_BOXED_CACHE_DIR=$plugin_cache "$venv/bin/kiwi-ng" system boxbuild --box plugbox \
    --no-accel --cpu max --no-update-check --box-memory 256M --box-smp-cpus 1 \
    -- --description "$work/desc" --target-dir "$work/out-plugin" >"$work/plugin.log" 2>&1
}
boxbuild_run() {
  BOXBUILD_CACHE_DIR=$work/boxbuild-cache "$boxbuild" --box plugbox --no-accel \
    --no-update-check --box-memory 256M --box-smp-cpus 1 \
    -- --description "$work/desc" --target-dir "$work/out-boxbuild" >"$work/boxbuild.log" 2>&1
}

# boxbuild's first run fetches the box into its cache (not timed); the plugin's first run
# warms its Python imports the same way.
BOXBUILD_UPDATE_CHECK_INTERVAL=0 boxbuild_run
plugin_run || true
: >"$work/plugin.times"
: >"$work/boxbuild.times"
# Alternating runs: a change in the machine's load falls on both tools alike.
for _ in $(seq "$runs"); do
  for tool in plugin boxbuild; do
    start=$(now)
    "${tool}_run" || { echo "$tool run failed:" >&2; tail -n 20 "$work/$tool.log" >&2; exit 1; }
    end=$(now)
    echo "$end - $start" | bc >>"$work/$tool.times"
  done
done
for tool in plugin boxbuild; do
  grep -q 'hello from the box' "$work/out-$tool/result.log" ||
    { echo "$tool: no build output in result.log" >&2; exit 1; }
done
plugin_median=$(median <"$work/plugin.times")
boxbuild_median=$(median <"$work/boxbuild.times")

echo "| run by | no-op build, wall time (median of $runs) |"
echo "|---|---|"
printf '| KIWI Python plugin (kiwi %s, `--no-accel --cpu max`) | %.2f s |\n' "$kiwi_version" "$plugin_median"
printf '| boxbuild | %.2f s |\n' "$boxbuild_median"
printf '| speed-up | %.1fx |\n' "$(echo "$plugin_median / $boxbuild_median" | bc -l)"
