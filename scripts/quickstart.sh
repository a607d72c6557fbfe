#!/usr/bin/env bash
# Builds staticlet, builds a busybox image from Debian's busybox-static (offline), imports it,
# and runs the example static pods in examples/manifests with the embedded runtime. As root.
# Stop with Ctrl-C: the containers keep running and are adopted by the next start; delete the
# manifests (or run with an empty --pod-manifest-path) to stop them.
#
# `quickstart.sh --check` (what CI runs) does the same in a throwaway root directory, waits until
# the example pods run and the web pod answers, then stops everything it started and removes
# it; exit 0 only then.
#
# STATICLET_QUICKSTART_PROFILE=dev builds with Cargo's dev profile instead of release (and runs the
# dev-built shim): CI's check uses it, because the release build (thin LTO, the fat-LTO shim) costs
# about 13 minutes on a fresh 2-core machine while the dev build is shared with the test suite
# that runs next. The code is the same; only the optimisation differs.
set -euo pipefail
cd "$(dirname "$0")/.."
check=false
case "${1:-}" in
  --check) check=true ;;
  "") ;;
  *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac
[ "$(id -u)" = 0 ] || { echo "quickstart.sh runs containers: run it as root" >&2; exit 1; }
# The Debian packages the build and the embedded runtime need (the list: scripts/deps.sh).
./scripts/deps.sh build run examples
case "${STATICLET_QUICKSTART_PROFILE:-release}" in
  release)
    cargo build --release -p staticlet
    # The shim runs once per container: built with the small `shim` profile, installed next to
    # staticlet.
    cargo build --profile shim -p staticlet-shim
    install -m 0755 target/shim/staticlet-shim target/release/staticlet-shim
    bin=target/release ;;
  dev)
    cargo build -p staticlet -p staticlet-shim
    bin=target/debug ;;
  *) echo "STATICLET_QUICKSTART_PROFILE must be release or dev" >&2; exit 2 ;;
esac
root="${STATICLET_ROOT:-/var/lib/staticlet}"
logs="${STATICLET_LOGS:-/var/log/pods}"
if $check; then
  work=$(mktemp -d /tmp/staticlet-quickstart.XXXXXX)
  root="$work/root" logs="$work/logs"
fi
mkdir -p "$root"
./scripts/busybox-image.sh "$root/busybox.tar" >/dev/null
./$bin/staticlet images import "$root/busybox.tar" --root-dir "$root"
if $check; then
  st=./$bin/staticlet
  cp -r examples/manifests "$work/manifests"
  "$st" run --pod-manifest-path "$work/manifests" --root-dir "$root" --log-dir "$logs" \
    --healthz-port 0 2>"$work/agent.log" &
  agent=$!
  stop() {
    rm -f "$work"/manifests/*.yaml
    for _ in $(seq 120); do
      [ -z "$("$st" get pods --root-dir "$root" 2>/dev/null | tail -n +2)" ] && break
      sleep 0.5
    done
    kill "$agent" 2>/dev/null; wait "$agent" 2>/dev/null || true
    umount "$root/runtime/sandboxes" 2>/dev/null || true
    rm -rf "$work"
  }
  trap stop EXIT
  # GET / on the web pod's port with bash alone (no curl needed).
  web_answers() {
    { exec 3<>/dev/tcp/127.0.0.1/8080; } 2>/dev/null || return 1
    printf 'GET / HTTP/1.0\r\nHost: localhost\r\n\r\n' >&3
    local body; body=$(timeout 5 cat <&3); exec 3<&-
    grep -q 'hello from a static pod' <<<"$body"
  }
  for i in $(seq 240); do
    if "$st" get pods --root-dir "$root" 2>/dev/null | grep -q '^web-.* Running' &&
      web_answers; then
      "$st" get pods --root-dir "$root" -o wide
      echo "quickstart check: the example pods run and the web pod answers"
      exit 0
    fi
    sleep 0.5
  done
  echo "quickstart check failed: pods not up within 120 s" >&2
  "$st" get pods --root-dir "$root" -o wide >&2 || true
  tail -n 30 "$work/agent.log" >&2
  exit 1
fi
echo "staticlet is starting. In another shell:"
echo "  ./$bin/staticlet get pods --root-dir $root -o wide"
echo "  curl http://127.0.0.1:8080/"
exec ./$bin/staticlet run --pod-manifest-path examples/manifests --root-dir "$root" --log-dir "$logs"
