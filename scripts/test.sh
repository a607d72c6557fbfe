#!/usr/bin/env bash
# Installs what the tests need and runs the whole suite: formatting, lints, every test.
# Usable on a fresh Debian 12 machine as root (offline except for the package registries).
set -euo pipefail
cd "$(dirname "$0")/.."

need_pkgs=()
command -v busybox >/dev/null 2>&1 || [ -x /bin/busybox ] || need_pkgs+=(busybox-static)
# Registry pull tests (crates/images/src/pull): a real registry to push to and pull from.
[ -x /usr/bin/docker-registry ] || need_pkgs+=(docker-registry)
[ -x /usr/bin/skopeo ] || need_pkgs+=(skopeo)
if [ "${#need_pkgs[@]}" -gt 0 ] && [ "$(id -u)" = 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}"
fi

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --all-features -- -D warnings
cargo test --workspace --all-features
