#!/usr/bin/env bash
# Builds the staticlet binary of an earlier git revision, for the cross-build upgrade step of
# crates/staticlet/tests/kubeadm_init_e2e.rs (STATICLET_PREVIOUS_BIN): the node runs this build
# first and is upgraded to the current one in the middle of `kubeadm upgrade apply`.
#
# Usage: scripts/build-previous.sh REV [OUT]
#   REV: any git revision of this repository (e.g. the commit CI last landed).
#   OUT: where the binary goes; default /var/cache/staticlet-prev/<short rev>/staticlet.
#   If OUT already exists it prints "cached" on stderr and its path, and builds nothing.
# The revision is checked out with `git worktree add` into a temporary directory and built with
# `cargo build -p staticlet` (debug, as the tests) with its own CARGO_TARGET_DIR,
# /var/cache/staticlet-prev/<short rev>/target, removed after the binary is copied out (set
# STATICLET_PREV_KEEP_TARGET=1 to keep it). STATICLET_PREV_SEED=DIR (a target directory, e.g.
# this checkout's target) seeds that target with DIR/debug/{deps,build,.fingerprint} first, so
# that only the workspace's own crates are compiled when Cargo.lock is the same.
# Not run by CI: it costs a full build. Prints the binary's path on its last line of stdout.
set -euo pipefail

[ $# -ge 1 ] || { echo "usage: $0 REV [OUT]" >&2; exit 2; }
repo=$(git -C "$(dirname "$0")/.." rev-parse --show-toplevel)
rev=$(git -C "$repo" rev-parse --verify "$1^{commit}")
short=${rev:0:12}
cache=/var/cache/staticlet-prev/$short
out=${2:-$cache/staticlet}
if [ -x "$out" ]; then
  echo "cached" >&2
  echo "$out"
  exit 0
fi
mkdir -p "$cache" "$(dirname "$out")"
src=$(mktemp -d /tmp/staticlet-prev-XXXXXX)
cleanup() {
  git -C "$repo" worktree remove --force "$src" 2>/dev/null || rm -rf "$src"
  [ "${STATICLET_PREV_KEEP_TARGET:-}" = 1 ] || rm -rf "$cache/target"
}
trap cleanup EXIT
git -C "$repo" worktree add --detach "$src" "$rev" >&2
if [ -n "${STATICLET_PREV_SEED:-}" ] && [ ! -d "$cache/target/debug/deps" ]; then
  mkdir -p "$cache/target/debug"
  # A target being built meanwhile loses temporary files under cp: cargo rebuilds what is missing.
  cp -a "$STATICLET_PREV_SEED"/debug/{deps,build,.fingerprint} "$cache/target/debug/" 2>/dev/null || true
fi
start=$(date +%s)
(cd "$src" && CARGO_TARGET_DIR="$cache/target" cargo build -p staticlet >&2)
install -m 0755 "$cache/target/debug/staticlet" "$out.tmp"
mv "$out.tmp" "$out"
echo "built staticlet $short in $(( $(date +%s) - start )) s" >&2
echo "$out"
