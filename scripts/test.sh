#!/usr/bin/env bash
# Installs what the tests need and runs the whole suite: formatting, lints, every test.
# Usable on a fresh Debian 12 machine as root with Rust and Go installed (README, Set-up);
# offline except for the package registries (Debian, crates.io, the Go module proxy).
set -euo pipefail
cd "$(dirname "$0")/.."

# The Debian packages the build, the embedded runtime and the tests need (the list:
# scripts/deps.sh).
./scripts/deps.sh build run examples test

# End-to-end tests (staticlet-k8s-testenv and the tests built on it) run a real etcd and
# kube-apiserver from these binaries. build-k8s.sh prints "cached" and returns at once when they
# exist; on a fresh machine it builds them from the Go module proxy (about 11 minutes; it needs
# Go, README), first, so that a missing Go fails before the long Rust build. Its last stdout line
# is the bin directory. STATICLET_REQUIRE_K8S=1 makes missing binaries fail those tests instead
# of letting them skip silently, so a broken setup can't pass as green.
k8s_bin=$(./scripts/build-k8s.sh | tail -n 1)
[ -x "$k8s_bin/kube-apiserver" ] || { echo "build-k8s.sh printed no bin dir ($k8s_bin)" >&2; exit 1; }
export STATICLET_K8S_BIN="$k8s_bin" STATICLET_REQUIRE_K8S=1

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --all-features -- -D warnings

rm -f target/control-plane-timings.txt
# Every test binary is built first (compile errors show as usual), then run two at a time in the
# lanes of scripts/test-lanes.py (which tests may overlap, and why; logs in target/test-logs),
# then the doc tests.
cargo test --workspace --all-features --no-run
cargo test --workspace --all-features --no-run --message-format=json 2>/dev/null \
  | python3 scripts/test-lanes.py
cargo test --workspace --all-features --doc

# Timings of the self-hosted control plane test (crates/staticlet/tests/control_plane_e2e.rs).
if [ -f target/control-plane-timings.txt ]; then cat target/control-plane-timings.txt; fi
