#!/usr/bin/env bash
# Runs boxbuild's checks and tests: formatting, lints, unit tests and the integration tests
# that boot real boxes under QEMU (TCG). The tiny test box is built on first use.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH=$HOME/.cargo/bin:$PATH
# The registry tests read boxes back with the Python ORAS client (PyPI's oras).
python3 -c 'import oras.client' 2>/dev/null || python3 -m pip install -q --user oras ||
  python3 -m pip install -q oras
# The stash tests stack stashes of native kiwi and feed kiwi's own stackbuild
# (tests/stash_registry.rs): kiwi 11 from PyPI in a venv under target/ (kiwi's stash runs
# umoci, skopeo, podman and rsync on the host; scripts/install.sh installs them).
kiwi_venv=$PWD/target/kiwi-native
[ -x "$kiwi_venv/bin/kiwi-ng" ] || {
  python3 -m venv "$kiwi_venv" && "$kiwi_venv/bin/pip" install -q kiwi==11.1.6
} || echo ">> could not install kiwi 11.1.6 into $kiwi_venv: the native kiwi stash test is skipped"
[ -x "$kiwi_venv/bin/kiwi-ng" ] && export BOXBUILD_TEST_KIWI_NG=$kiwi_venv/bin/kiwi-ng
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -q -- -D warnings
# The floors first (docs/design.md, "The map"): an upward import fails in a second.
cargo test --locked --test layering
cargo test --workspace --locked "$@"
# The spine once more over each other backend (tests/sharing.rs covers all of them itself).
for backend in virtiofs sshfs; do
  BOXBUILD_TEST_SHARING=--$backend-sharing cargo test --locked --test spine "$@"
done
# boxbuild's container image, built by scripts/build-image.sh (kiwi in the Debian box) and
# run under podman and `podman kube play`; its tests are ignored by a plain `cargo test`.
python3 -c 'import kubernetes_validate' 2>/dev/null || python3 -m pip install -q --user kubernetes-validate ||
  python3 -m pip install -q kubernetes-validate
cargo test --locked --test image "$@" -- --ignored
