#!/usr/bin/env bash
# The slow end-to-end test: real kiwi builds of the examples through boxbuild in the
# Debian box, each artifact checked for real. Under TCG this takes a while (see
# docs/benchmarks.md); it is not part of scripts/test.sh.
#
#   scripts/e2e-kiwi.sh [tarball] [disk] [container] [cross] [packages] [box-image]
#                       (default: the first three)
#
# `box-image` builds examples/debian-disk with format="oci:qcow2" (KIWI's disk in a
# container image) with --container, pushes it to a registry on 127.0.0.1 and checks that
# boxbuild refuses it as a box in one line naming the disk and what it lacks
# (tests/box_image.rs; docs/box-images.md).
#
# `cross` builds examples/debian-tarball for aarch64 in the aarch64 VM (TCG) and with
# --container through the host's qemu-user (scripts/bench-cross.sh; the aarch64 Debian box
# from $BOXBUILD_CROSS_BOX_DIR or built by its recipe) and checks that both tarballs hold
# aarch64 binaries and the same package list.
#
# `packages` builds the tarball example twice in a VM (9p, or the backend in
# $BOXBUILD_E2E_ARGS) with a fresh package cache: the second build must download no
# package the first one fetched (docs/cache.md, "Packages kept across builds").
#
# $BOXBUILD_E2E_ARGS adds boxbuild options (e.g. --virtiofs-sharing). The box is the one
# registered as 'debian' (scripts/install.sh). Prints one PASS/FAIL line per example and
# the wall time; exits non-zero if any failed.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH=$HOME/.cargo/bin:$PATH
boxbuild=${BOXBUILD:-$here/target/release/boxbuild}
[ -n "${BOXBUILD:-}" ] || (cd "$here" && cargo build --release --locked -q)
examples=("$@")
[ ${#examples[@]} -gt 0 ] || examples=(tarball disk container)
work=$(mktemp -d "${TMPDIR:-/var/tmp}/boxbuild-e2e.XXXXXX")
trap 'rm -rf "$work"' EXIT
read -r -a extra <<<"${BOXBUILD_E2E_ARGS:-}"

# Checks run in a subshell: the first failure ends the check.
fail() { echo "FAIL $example: $*" >&2; exit 1; }

# The os-release of a Debian bookworm root, read from a stream of a tar archive.
says_bookworm() { grep -q '^VERSION_CODENAME=bookworm$'; }

check_tarball() {
  local out=$1 archive
  archive=$(ls "$out"/*.tar.xz 2>/dev/null | head -n1)
  [ -n "$archive" ] || fail "no .tar.xz in $out: $(ls "$out")"
  tar -xJOf "$archive" --wildcards '*usr/lib/os-release' | says_bookworm ||
    fail "$archive holds no bookworm os-release"
  echo "  $(basename "$archive"): $(du -h "$archive" | cut -f1), os-release says bookworm"
}

check_disk() {
  local out=$1 image raw table start size
  image=$(ls "$out"/*.qcow2 2>/dev/null | head -n1)
  [ -n "$image" ] || fail "no .qcow2 in $out: $(ls "$out")"
  raw=$work/disk.raw
  qemu-img convert -O raw "$image" "$raw"
  table=$(/sbin/sfdisk -d "$raw") || fail "$image has no partition table"
  # The largest partition is the root file system.
  read -r start size < <(awk -F'[=,]' '/start=/ {print $2, $4}' <<<"$table" | sort -k2 -n | tail -n1)
  dd if="$raw" of="$work/root.part" bs=512 skip="$start" count="$size" conv=sparse status=none
  /sbin/debugfs -R 'cat /usr/lib/os-release' "$work/root.part" 2>/dev/null | says_bookworm ||
    fail "the root partition of $image holds no bookworm os-release"
  echo "  $(basename "$image"): $(grep -c 'start=' <<<"$table") partition(s), $(sed -n 's/^label: //p' <<<"$table") label, root says bookworm"
  rm -f "$raw" "$work/root.part"
}

check_container() {
  local out=$1 archive layer found=""
  archive=$(ls "$out"/*.oci.tar* 2>/dev/null | head -n1)
  [ -n "$archive" ] || fail "no OCI archive in $out: $(ls "$out")"
  case "$archive" in
    *.xz) xz -dc "$archive" >"$work/image.oci.tar" ;;
    *) cp "$archive" "$work/image.oci.tar" ;;
  esac
  skopeo inspect "oci-archive:$work/image.oci.tar" >"$work/inspect.json" || fail "skopeo cannot read $archive"
  grep -q '"Architecture": "amd64"\|"Architecture": "arm64"' "$work/inspect.json" ||
    fail "no architecture in the image config"
  skopeo copy -q "oci-archive:$work/image.oci.tar" "dir:$work/image" || fail "skopeo cannot copy $archive"
  for layer in "$work"/image/*; do
    if tar -xzOf "$layer" --wildcards '*usr/lib/os-release' 2>/dev/null | says_bookworm; then
      found=$layer
    fi
  done
  [ -n "$found" ] || fail "no layer of $archive holds a bookworm os-release"
  echo "  $(basename "$archive"): OCI image, $(ls "$work/image" | wc -l) files in its layout, os-release says bookworm"
  rm -rf "$work/image" "$work/image.oci.tar"
}

check_cross() {
  local report
  report=$("$here/scripts/bench-cross.sh" aarch64) || fail "scripts/bench-cross.sh failed"
  echo "$report" | sed 's/^/  | /'
  grep -q 'are equal: yes' <<<"$report" || fail "the VM and the qemu-user build differ in their packages"
  [ "$(grep -o 'ARM aarch64' <<<"$report" | wc -l)" = 2 ] || fail "a tarball holds no aarch64 binaries"
}

# The package cache over a VM share: the second build reuses every package.
check_packages() {
  local first second
  first=$(grep 'boxbuild-kiwi: package cache:' "$work/packages-1.log") || fail "no package cache line in the first build"
  second=$(grep 'boxbuild-kiwi: package cache:' "$work/packages.log") || fail "no package cache line in the second build"
  grep -q ' 0 downloaded' <<<"$second" || fail "the second build downloaded packages: $second"
  echo "  first: ${first#*: package cache: }; second: ${second#*: package cache: }"
}

failed=0
for example in "${examples[@]}"; do
  if [ "$example" = cross ]; then
    start=$(date +%s)
    echo ">> cross: examples/debian-tarball for aarch64, in the VM and with --container through qemu-user"
    if (check_cross); then echo "PASS cross $(( $(date +%s) - start ))s"; else echo "FAIL cross"; failed=1; fi
    continue
  fi
  if [ "$example" = packages ]; then
    out=$work/packages
    start=$(date +%s)
    echo ">> packages: the tarball example twice in a VM, one package cache"
    if BOXBUILD_CACHE_DIR=$work/cache "$boxbuild" --box debian "${extra[@]}" kiwi \
        --description "$here/examples/debian-tarball" --target-dir "$out-1" >"$work/packages-1.log" 2>&1 &&
       BOXBUILD_CACHE_DIR=$work/cache "$boxbuild" --box debian "${extra[@]}" kiwi \
        --description "$here/examples/debian-tarball" --target-dir "$out" >"$work/packages.log" 2>&1 &&
       (check_packages && check_tarball "$out"); then
      echo "PASS packages $(( $(date +%s) - start ))s"
    else
      echo "FAIL packages $(( $(date +%s) - start ))s; the last lines of its output:"
      tail -n 30 "$work/packages.log" "$work/packages-1.log" 2>/dev/null | sed 's/^/  | /'
      failed=1
    fi
    continue
  fi
  if [ "$example" = box-image ]; then
    start=$(date +%s)
    echo ">> box-image: a KIWI oci:qcow2 disk image offered as a box"
    if (cd "$here" && cargo test --locked -q --test box_image -- --ignored --exact \
        a_disk_image_kiwi_built_with_format_oci_qcow2_is_refused_saying_what_it_lacks) \
        >"$work/box-image.log" 2>&1; then
      echo "PASS box-image $(( $(date +%s) - start ))s"
    else
      echo "FAIL box-image $(( $(date +%s) - start ))s; the last lines of its output:"
      tail -n 30 "$work/box-image.log" | sed 's/^/  | /'
      failed=1
    fi
    continue
  fi
  [ -d "$here/examples/debian-$example" ] || { echo "no example debian-$example" >&2; exit 2; }
  out=$work/$example
  start=$(date +%s)
  echo ">> $example: boxbuild --box debian ${extra[*]} -- --description examples/debian-$example --target-dir $out"
  if "$boxbuild" --box debian "${extra[@]}" -- \
      --description "$here/examples/debian-$example" --target-dir "$out" >"$work/$example.log" 2>&1 &&
     ("check_$example" "$out"); then
    echo "PASS $example $(( $(date +%s) - start ))s"
  else
    echo "FAIL $example $(( $(date +%s) - start ))s; the last lines of its output:"
    tail -n 30 "$work/$example.log" | sed 's/^/  | /'
    failed=1
  fi
done
exit $failed
