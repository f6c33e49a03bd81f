#!/usr/bin/env bash
# Prints a short hash of everything a box recipe's output depends on: the recipe's own
# directory, the shared recipe library and the guest agent's sources. A box built with
# the same stamp need not be built again.
#
#   boxes/lib/recipe-stamp.sh RECIPE   (e.g. debian)
set -euo pipefail
cd "$(dirname "$0")/../.."
recipe=${1:?usage: recipe-stamp.sh RECIPE}
[ -d "boxes/$recipe" ] || { echo "error: no recipe boxes/$recipe" >&2; exit 1; }
find "boxes/$recipe" boxes/lib guest-agent -type f \
  \( -path 'boxes/*' -o -name '*.rs' -o -name Cargo.toml \) -not -path '*/target/*' |
  LC_ALL=C sort | xargs sha256sum | sha256sum | cut -c1-16
