#!/usr/bin/env bash
# Builds staticlet, builds a busybox image from Debian's busybox-static (offline), imports it,
# and runs the example static pods in examples/manifests with the embedded runtime. As root.
# Stop with Ctrl-C: the containers keep running and are adopted by the next start; delete the
# manifests (or run with an empty --pod-manifest-path) to stop them.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "quickstart.sh runs containers: run it as root" >&2; exit 1; }
# The Debian packages the build and the embedded runtime need (the list: scripts/deps.sh).
./scripts/deps.sh build run
cargo build --release -p staticlet
# The shim runs once per container: built with the small `shim` profile, installed next to staticlet.
cargo build --profile shim -p staticlet-shim
install -m 0755 target/shim/staticlet-shim target/release/staticlet-shim
root="${STATICLET_ROOT:-/var/lib/staticlet}"
logs="${STATICLET_LOGS:-/var/log/pods}"
mkdir -p "$root"
./scripts/busybox-image.sh "$root/busybox.tar" >/dev/null
./target/release/staticlet images import "$root/busybox.tar" --root-dir "$root"
echo "staticlet is starting. In another shell:"
echo "  ./target/release/staticlet get pods --root-dir $root -o wide"
echo "  curl http://127.0.0.1:8080/"
exec ./target/release/staticlet run --pod-manifest-path examples/manifests --root-dir "$root" --log-dir "$logs"
