#!/usr/bin/env bash
# Installs what the tests need and runs the whole suite: formatting, lints, every test.
# Usable on a fresh Debian 12 machine as root (offline except for the package registries).
set -euo pipefail
cd "$(dirname "$0")/.."

need_pkgs=()
command -v busybox >/dev/null 2>&1 || [ -x /bin/busybox ] || need_pkgs+=(busybox-static)
# staticlet-cni's tests run the reference CNI plugins (bridge, host-local, portmap, loopback; the
# package pulls in iptables) in network namespaces made with `ip`.
[ -x /usr/lib/cni/bridge ] || need_pkgs+=(containernetworking-plugins)
command -v ip >/dev/null 2>&1 || need_pkgs+=(iproute2)
if [ "${#need_pkgs[@]}" -gt 0 ] && [ "$(id -u)" = 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}"
fi

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --all-features -- -D warnings
cargo test --workspace --all-features
