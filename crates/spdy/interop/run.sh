#!/usr/bin/env bash
# Interop check against real Kubernetes clients: client-go's SPDY executor (exec with
# stdin/stdout/stderr, exit code, 5 MiB of output, TTY resize) and port forwarder (echo over
# several connections, failure message), driving the crate's `interop_server` example.
# Needs Go and the Go module proxy; not part of `cargo test`.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
cargo build --manifest-path "$root/Cargo.toml" -p staticlet-spdy --example interop_server
work="$(mktemp -d)"
trap 'kill "$server" 2>/dev/null || true; rm -rf "$work"' EXIT
(cd "$here" && go build -o "$work/client" .)
"$root/target/debug/examples/interop_server" 127.0.0.1:0 >"$work/server.log" 2>&1 &
server=$!
for _ in $(seq 100); do
  addr="$(awk '/^listening on/ {print $3}' "$work/server.log")"
  [ -n "$addr" ] && break
  sleep 0.1
done
[ -n "$addr" ] || { echo "server did not start"; cat "$work/server.log"; exit 1; }
"$work/client" "$addr"
