#!/usr/bin/env bash
# Installs what the tests need and runs the whole suite: formatting, lints, every test.
# Usable on a fresh Debian 12 machine as root (offline except for the package registries).
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the build and the tests need (real containers run as root):
#   libseccomp-dev, pkg-config   libcontainer's seccomp support (build)
#   busybox-static               the test images' userland
#   iproute2, util-linux         network namespaces, pinned namespaces
#   containernetworking-plugins  CNI bridge / host-local / loopback / portmap
#   docker-registry, skopeo      a local registry for real pulls
#   protobuf-compiler            protoc for k8s-cri's generated CRI client (build)
#   containerd, runc             the CRI runtime the runtime-cri tests start privately
#   gcc, libc6-dev               scripts/pause-image.sh builds a static pause binary
pkgs=(libseccomp-dev pkg-config busybox-static iproute2 util-linux containernetworking-plugins docker-registry skopeo protobuf-compiler containerd runc gcc libc6-dev)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "missing Debian packages: ${missing[*]} (run as root to install them)" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# docker-registry's package starts a system service on :5000; the tests start their own.
systemctl disable --now docker-registry >/dev/null 2>&1 || true

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --all-features -- -D warnings

# End-to-end tests (staticlet-k8s-testenv and the tests built on it) run a real etcd and
# kube-apiserver from these binaries. build-k8s.sh prints "cached" and returns at once when they
# exist; on a fresh machine it builds them from the Go module proxy (about 11 minutes). Its last
# stdout line is the bin directory. STATICLET_REQUIRE_K8S=1 makes missing binaries fail those
# tests instead of letting them skip silently, so a broken setup can't pass as green.
k8s_bin=$(./scripts/build-k8s.sh | tail -n 1)
[ -x "$k8s_bin/kube-apiserver" ] || { echo "build-k8s.sh printed no bin dir ($k8s_bin)" >&2; exit 1; }
export STATICLET_K8S_BIN="$k8s_bin" STATICLET_REQUIRE_K8S=1

rm -f target/control-plane-timings.txt
cargo test --workspace --all-features

# Timings of the self-hosted control plane test (crates/staticlet/tests/control_plane_e2e.rs).
if [ -f target/control-plane-timings.txt ]; then cat target/control-plane-timings.txt; fi
