#!/usr/bin/env bash
# Publishes boxes built by a recipe (boxes/*/build.sh OUTDIR) into a directory that any
# static web server can serve as a remote catalog:
#
#   scripts/publish-box.sh SITE BOXDIR...
#
# Each box's files are copied to SITE/NAME/ARCH/VERSION/, and SITE/catalog.toml is written
# anew from every box published to SITE so far, with URLs relative to the catalog (they
# resolve against the catalog's own URL). Users then set
#   BOXBUILD_CATALOG_URL=https://host/path/catalog.toml
# or list the URL under remote_catalogs (docs/catalog.md).
#
#   scripts/publish-box.sh --oci oci://REGISTRY/REPOSITORY:TAG [--sign-key KEY] BOXDIR...
#
# pushes the boxes (one per architecture, all of one name and version) to an OCI registry
# as one image index instead, with `boxbuild box push` (docs/oci-boxes.md); BOXBUILD names
# the boxbuild to use (default: the one on PATH).
set -euo pipefail
if [ "${1:-}" = --oci ]; then
  ref=${2:?usage: publish-box.sh --oci REF [--sign-key KEY] BOXDIR...}; shift 2
  sign=()
  if [ "${1:-}" = --sign-key ]; then sign=(--sign-key "${2:?--sign-key needs a key file}"); shift 2; fi
  [ $# -gt 0 ] || { echo "usage: publish-box.sh --oci REF [--sign-key KEY] BOXDIR..." >&2; exit 2; }
  catalog=$(mktemp --suffix=.toml)
  trap 'rm -f "$catalog"' EXIT
  first=1
  for boxdir in "$@"; do
    [ -f "$boxdir/catalog.toml" ] || { echo "error: $boxdir/catalog.toml not found (build the box first)" >&2; exit 1; }
    if [ $first = 1 ]; then
      cat "$boxdir/catalog.toml" >"$catalog"
      name=$(sed -n 's/^\[boxes\.\([A-Za-z0-9_.-]*\)\]$/\1/p' "$boxdir/catalog.toml" | head -n1)
      version=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$boxdir/catalog.toml" | head -n1)
      first=0
    else
      sed -n "/^\[\[boxes\.$name\.versions\]\]/,\$p" "$boxdir/catalog.toml" >>"$catalog"
    fi
  done
  BOXBUILD_CONFIG=$catalog exec "${BOXBUILD:-boxbuild}" box push "$name@$version" "$ref" "${sign[@]}"
fi
site=${1:?usage: publish-box.sh SITE BOXDIR...}; shift
[ $# -gt 0 ] || { echo "usage: publish-box.sh SITE BOXDIR..." >&2; exit 2; }
mkdir -p "$site/.entries"
site=$(cd "$site" && pwd)

for boxdir in "$@"; do
  catalog=$boxdir/catalog.toml
  [ -f "$catalog" ] || { echo "error: $catalog not found (build the box first)" >&2; exit 1; }
  name=$(sed -n 's/^\[boxes\.\([A-Za-z0-9_.-]*\)\]$/\1/p' "$catalog" | head -n1)
  version=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$catalog" | head -n1)
  arch=$(sed -n 's/^arch = "\(.*\)"$/\1/p' "$catalog" | head -n1)
  [ -n "$name" ] && [ -n "$version" ] && [ -n "$arch" ] ||
    { echo "error: $catalog names no box, version or arch" >&2; exit 1; }
  dest=$name/$arch/$version
  mkdir -p "$site/$dest"
  # The box's own settings, once per name; the version entry, once per version and arch.
  sed -n "1,/^\[\[boxes\.$name\.versions\]\]/p" "$catalog" | sed '$d' | grep -v '^#' \
    >"$site/.entries/$name.box.toml"
  entry=$site/.entries/$name@$version@$arch.toml
  sed -n "/^\[\[boxes\.$name\.versions\]\]/,\$p" "$catalog" >"$entry.new"
  for role in kernel initrd disk; do
    path=$(sed -n "s/^$role = { path = \"\([^\"]*\)\".*/\1/p" "$entry.new")
    [ -n "$path" ] || continue
    file=$(basename "$path")
    cp "$path" "$site/$dest/$file.tmp" && mv "$site/$dest/$file.tmp" "$site/$dest/$file"
    sed -i "s|^$role = { path = \"[^\"]*\"|$role = { url = \"$dest/$file\"|" "$entry.new"
  done
  mv "$entry.new" "$entry"
  echo ">> published $name $version ($arch) to $site/$dest"
done

{
  echo "# Written by scripts/publish-box.sh; serve this directory with any web server."
  for box in "$site"/.entries/*.box.toml; do
    name=$(basename "$box" .box.toml)
    echo
    cat "$box"
    for entry in "$site/.entries/$name@"*.toml; do
      echo
      cat "$entry"
    done
  done
} >"$site/catalog.toml.tmp"
mv "$site/catalog.toml.tmp" "$site/catalog.toml"
echo ">> $site/catalog.toml lists $(grep -c '^\[\[boxes\.' "$site/catalog.toml") box version(s)"
