#!/usr/bin/env bash
# Benchmarks the sharing backends and prints a Markdown section (scripts/bench.sh puts it
# into docs/benchmarks.md).
#
#   scripts/bench-sharing.sh [SIZE_MIB] [FILES]
#
# In one run on one machine, the same operations on: the host disk (native), a tmpfs in the
# box (the emulated CPU's baseline), the target dir shared over 9p, virtiofs and sshfs:
# write SIZE_MIB (default 256) MiB and read it back (guest caches dropped), create FILES
# (default 2000) small files and list them.
set -euo pipefail
cd "$(dirname "$0")/.."
size_mib=${1:-256}
files=${2:-2000}
cargo build --release -q
bin=$PWD/target/release/boxbuild
boxdir=${BOXBUILD_TEST_BOX_DIR:-$PWD/target/test-boxes/tiny-$(uname -m)}
[ -f "$boxdir/catalog.toml" ] || boxes/tiny/build.sh "$boxdir" >&2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export BOXBUILD_CONFIG=$boxdir/catalog.toml

# The measuring script: runs in DIR, prints "op start end" with /proc/uptime seconds (in
# the box) or date (on the host).
cat >"$work/measure.sh" <<'SH'
dir=$1 size=$2 files=$3 clock=$4
now() { if [ "$clock" = uptime ]; then read -r t _ </proc/uptime; echo "$t"; else date +%s.%N; fi; }
cd "$dir"
s=$(now); dd if=/dev/zero of=big bs=1M count="$size" conv=fsync 2>/dev/null || { echo "write failed in $dir" >&2; exit 1; }; e=$(now); echo "write $s $e"
sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
s=$(now); cat big >/dev/null; e=$(now); echo "read $s $e"
mkdir many
s=$(now); i=0; while [ $i -lt "$files" ]; do echo x >"many/f$i" || exit 1; i=$((i+1)); done; sync; e=$(now); echo "create $s $e"
s=$(now); ls -l many >/dev/null; e=$(now); echo "list $s $e"
rm -rf big many
SH
mkdir -p "$work/desc" "$work/host"
cp "$work/measure.sh" "$work/desc/measure.sh"

row() { # NAME RESULTS-FILE
  local w r c l
  w=$(awk '$1=="write" {print $3-$2}' "$2"); r=$(awk '$1=="read" {print $3-$2}' "$2")
  c=$(awk '$1=="create" {print $3-$2}' "$2"); l=$(awk '$1=="list" {print $3-$2}' "$2")
  rate() { awk -v s="$size_mib" -v t="$1" 'BEGIN { if (t <= 0) print "> " s/0.01; else printf "%.0f", s/t }'; }
  echo "| $1 | $(rate "$w") | $(rate "$r") | $(printf '%.2f' "$c") s | $(printf '%.2f' "$l") s |"
}

echo ">> host disk" >&2
sh "$work/measure.sh" "$work/host" "$size_mib" "$files" date >"$work/host.txt"
echo ">> box memory (tmpfs)" >&2
echo "mkdir -p /mnt/t && mount -t tmpfs tmpfs /mnt/t && sh /description/measure.sh /mnt/t $size_mib $files uptime > box.txt" >"$work/desc/script.sh"
"$bin" -q --no-accel --box tiny --box-memory 1G -- --description "$work/desc" --target-dir "$work/out-box"
for backend in 9p virtiofs sshfs; do
  echo ">> $backend" >&2
  echo "sh /description/measure.sh /target $size_mib $files uptime > /root/r.txt; cp /root/r.txt $backend.txt" >"$work/desc/script.sh"
  "$bin" -q --no-accel "--$backend-sharing" --box tiny --box-memory 1G -- \
    --description "$work/desc" --target-dir "$work/out-$backend"
done

cat <<MD
## Sharing: ${size_mib} MiB written and read, ${files} small files created and listed

One run each on this machine. The box runs under TCG; the tmpfs row shows what the
emulated CPU alone costs for the same work. The box's page cache is dropped between write
and read.

| where | write MiB/s | read MiB/s | create ${files} files | list them |
|---|---|---|---|---|
$(row "host disk (native)" "$work/host.txt")
$(row "box's memory, tmpfs (TCG baseline)" "$work/out-box/box.txt")
$(row "target dir over 9p" "$work/out-9p/9p.txt")
$(row "target dir over virtiofs" "$work/out-virtiofs/virtiofs.txt")
$(row "target dir over sshfs" "$work/out-sshfs/sshfs.txt")
MD
