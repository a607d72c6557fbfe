#!/usr/bin/env bash
# Builds staticlet and runs the example static pods in examples/manifests, offline.
# Until the embedded runtime lands, the agent runs them on its built-in simulator runtime
# (containers are simulated; nothing is executed). Stop with Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p staticlet
root="${STATICLET_ROOT:-/tmp/staticlet-quickstart}"
mkdir -p "$root"
echo "staticlet is starting; in another shell: ./target/release/staticlet get pods --root-dir $root"
exec ./target/release/staticlet run \
  --pod-manifest-path examples/manifests \
  --root-dir "$root" --log-dir "$root/logs" \
  --container-runtime-endpoint simulate://
