#!/usr/bin/env bash
# Checks that what an administrator installed serves a normal user: run as root after
# `scripts/install.sh` (as root), it creates a fresh user with an empty home, and as that
# user lists the boxes, builds on the tiny box and checks the result: the builder's exit
# code and output, the artifact owned by the user, the system's boxes untouched, nothing
# of the run left behind. The user is removed again.
#
#   scripts/test-system-install.sh [BOXBUILD]   (default: boxbuild from PATH)
set -euo pipefail
[ "$(id -u)" = 0 ] || { echo "error: run as root (it creates a user for the check)" >&2; exit 2; }
boxbuild=$(command -v "${1:-boxbuild}") || { echo "error: no boxbuild on PATH; run scripts/install.sh first" >&2; exit 2; }
user=bbcheck$$
home=$(mktemp -d /tmp/boxbuild-user-check.XXXXXX)
fail() { echo "FAIL: $*" >&2; exit 1; }
cleanup() {
  pkill -KILL -u "$user" 2>/dev/null || true
  userdel "$user" 2>/dev/null || true
  rm -rf "$home"
}
trap cleanup EXIT
useradd --home-dir "$home/home" --create-home --shell /bin/sh "$user"
chmod 0755 "$home"
as_user() {
  # A login-like environment of the user's own: no variable of root's reaches it.
  env -i HOME="$home/home" USER="$user" LOGNAME="$user" PATH=/usr/local/bin:/usr/bin:/bin \
    setpriv --reuid="$user" --regid="$user" --init-groups -- "$@"
}

# The system's catalogs and the box files they name: size and time of each.
snapshot() {
  {
    find /etc/boxbuild -type f -exec stat -c '%n %s %Y' {} + || true
    grep -ho 'path = "[^"]*"' /etc/boxbuild/catalog.d/*.toml | cut -d'"' -f2 | xargs -r stat -c '%n %s %Y'
  } 2>/dev/null | sort | sha256sum
}
before=$(snapshot)
echo ">> as user $user (uid $(id -u "$user")), fresh home $home/home"
list=$(as_user "$boxbuild" --list-boxes) || fail "--list-boxes failed"
grep -q '^tiny ' <<<"$list" || fail "the user does not see box 'tiny': $list"
grep -q '^debian ' <<<"$list" || fail "the user does not see box 'debian': $list"

desc=$home/home/desc out=$home/home/out
as_user mkdir -p "$desc"
as_user sh -c "printf '%s\n' 'echo built-by-\$(id -u)' 'echo artifact >artifact.txt' 'exit 3' >'$desc/script.sh'"
set +e
as_user "$boxbuild" --no-accel --box tiny -- --description "$desc" --target-dir "$out" >"$home/stdout" 2>"$home/stderr"
code=$?
set -e
[ "$code" = 3 ] || { cat "$home/stderr" >&2; fail "exit code $code, expected the builder's 3"; }
grep -q '^built-by-0$' "$home/stdout" || fail "the builder's output did not arrive: $(cat "$home/stdout")"
grep -q 'built-by-0' "$out/result.log" || fail "result.log lacks the builder's output"
[ "$(stat -c %U "$out/artifact.txt")" = "$user" ] || fail "the artifact is owned by $(stat -c %U "$out/artifact.txt"), not $user"
after=$(snapshot)
[ "$before" = "$after" ] || fail "the user's build changed the system's boxes or catalogs"
if pgrep -u "$user" >/dev/null; then fail "processes of the build are left: $(pgrep -a -u "$user")"; fi
left=$(find "/tmp/boxbuild-$(id -u "$user")" -mindepth 1 -maxdepth 1 -name 'run-*' 2>/dev/null || true)
[ -z "$left" ] || fail "run dirs left behind: $left"
echo "1 passed, 0 failed: system install serves a fresh unprivileged user"
