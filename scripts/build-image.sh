#!/usr/bin/env bash
# Builds boxbuild's container image with boxbuild itself: the kiwi description in
# deploy/image/, staged with boxbuild in its root/ overlay, built by kiwi-ng in the Debian
# box (--container), and copied into podman's local storage. The last line printed is the
# image's reference. docs/container-image.md has the details.
#
#   scripts/build-image.sh [--tag TAG] [--out DIR] [--force]
#
# BOXBUILD         the boxbuild binary that goes into the image and runs the build
#                  (default: target/release/boxbuild, built here)
# BOXBUILD_IMAGE_BOX   the box kiwi runs in (default: debian)
# BOXBUILD_IMAGE_ARGS  more boxbuild options for the build (default: --container)
# SOURCE_DATE_EPOCH    the image's time stamps (default: the last commit's time)
#
# The image is not built again when podman already holds one made from the same
# description, binary and SOURCE_DATE_EPOCH (its label org.boxbuild.image.stamp), unless
# --force.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH=$HOME/.cargo/bin:$PATH
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$here/Cargo.toml" | head -n1)
tag=localhost/boxbuild:$version
out=$here/target/image
force=
while [ $# -gt 0 ]; do
  case $1 in
    --tag) tag=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --force) force=1; shift ;;
    *) echo "usage: $0 [--tag TAG] [--out DIR] [--force]" >&2; exit 2 ;;
  esac
done
boxbuild=${BOXBUILD:-$here/target/release/boxbuild}
[ -n "${BOXBUILD:-}" ] || (cd "$here" && cargo build --release --locked -q)
revision=$(git -C "$here" rev-parse HEAD 2>/dev/null || echo unknown)
: "${SOURCE_DATE_EPOCH:=$(git -C "$here" log -1 --format=%ct 2>/dev/null || echo 0)}"
export SOURCE_DATE_EPOCH
read -r -a box_args <<<"${BOXBUILD_IMAGE_ARGS:---container}"

# The staged description: deploy/image with its placeholders filled and boxbuild in root/.
mkdir -p "$out"
desc=$out/description
rm -rf "$desc"
cp -a "$here/deploy/image" "$desc"
install -D -m 0755 "$boxbuild" "$desc/root/usr/local/bin/boxbuild"
install -D -m 0644 "$here/README.md" "$desc/root/usr/share/doc/boxbuild/README.md"
install -D -m 0644 "$here/docs/container-image.md" "$desc/root/usr/share/doc/boxbuild/container-image.md"
stamp=$( (cd "$desc" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum;
  echo "$SOURCE_DATE_EPOCH ${box_args[*]}") | sha256sum | cut -c1-32)
sed -i -e "s/@VERSION@/$version/g" -e "s/@REVISION@/$revision/g" -e "s/@STAMP@/$stamp/g" \
  "$desc/config.kiwi"
sed -i "s/@SOURCE_DATE_EPOCH@/$SOURCE_DATE_EPOCH/g" "$desc/config.sh"
touch -d "@$SOURCE_DATE_EPOCH" -h $(find "$desc/root")

if [ -z "$force" ] && podman image exists "$tag" 2>/dev/null &&
   [ "$(podman image inspect --format '{{index .Labels "org.boxbuild.image.stamp"}}' "$tag")" = "$stamp" ]; then
  echo "image $tag is current (stamp $stamp)" >&2
  echo "$tag"
  exit 0
fi

result=$out/result
rm -rf "$result"
start=$(date +%s)
echo ">> boxbuild --box ${BOXBUILD_IMAGE_BOX:-debian} ${box_args[*]} -- --description $desc --target-dir $result" >&2
"$boxbuild" --box "${BOXBUILD_IMAGE_BOX:-debian}" "${box_args[@]}" -- \
  --description "$desc" --target-dir "$result" >&2
archive=$(ls "$result"/*.oci.tar* | head -n1)
case $archive in
  *.xz) xz -dc "$archive" >"$out/boxbuild.oci.tar" ;;
  *) cp "$archive" "$out/boxbuild.oci.tar" ;;
esac
digest=$(skopeo inspect --format '{{.Digest}}' "oci-archive:$out/boxbuild.oci.tar")
skopeo copy -q "oci-archive:$out/boxbuild.oci.tar" "containers-storage:$tag" >&2
echo "built in $(( $(date +%s) - start ))s, SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH, manifest $digest" >&2
echo "archive: $out/boxbuild.oci.tar" >&2
echo "$tag"
