#!/usr/bin/env bash
# Installs the Debian 12 packages staticlet needs, by purpose: the one list of them.
#
# Usage: scripts/deps.sh GROUP...          (GROUP: build, run, examples, test)
#        scripts/deps.sh --print GROUP...  prints the packages, one per line, installs nothing
#   scripts/deps.sh build run examples         what scripts/quickstart.sh needs
#   scripts/deps.sh build run examples test    what scripts/test.sh needs
#   scripts/deps.sh --print run                the Debian package's run-time Depends
#                                              (scripts/package-deb.sh; shared libraries added)
# Installs only the packages that are missing (apt-get update first, then apt-get install
# --no-install-recommends); needs root only then. Nothing missing: returns at once, silently.
#
# Not Debian packages, so not installed here (README, Set-up):
#   Rust stable, 1.89 or newer (the workspace's rust-version), with rustfmt and clippy (rustup's
#     default profile; Debian 12's rustc is 1.63): checked with `build`.
#   Go 1.21 or newer, for scripts/build-k8s.sh (test.sh runs it) while the Kubernetes binaries
#     are not built yet (Debian 12's golang-go is 1.19): build-k8s.sh checks it.
set -euo pipefail

# What `cargo build` needs.
build=(
  gcc libc6-dev     # the C compiler and linker cargo calls (crates with C code: ring, zstd-sys);
                    # also scripts/pause-image.sh's static pause binary (the test images)
  pkg-config        # finds libseccomp for libseccomp-sys
  libseccomp-dev    # libcontainer's seccomp support
  protobuf-compiler # protoc for k8s-cri's generated CRI client (runtime-cri)
  ca-certificates   # cargo downloads crates over HTTPS (as Go does in build-k8s.sh)
)
# What the embedded runtime needs at run time (the .deb's Depends, with the shared libraries).
run=(
  util-linux        # unshare: each sandbox's PID-namespace holder
  containernetworking-plugins # CNI bridge, host-local, loopback, portmap for pods without
                    # hostNetwork (the examples use hostNetwork); pulls iptables
)
# The quick start's example image (and the tests' images).
examples=(
  busybox-static    # scripts/busybox-image.sh builds the image from its /bin/busybox
)
# What the tests need beyond build and run.
test=(
  iproute2          # ip: network namespaces and bridges of the CNI tests, their clean-up;
                    # build-k8s.sh's advertise address
  docker-registry   # a local registry for real pulls (its system service is disabled below)
  skopeo            # copies test images into that registry
  containerd runc   # the CRI runtime the runtime-cri and e2e tests (and bench/peers.py) start
                    # privately (and ctr)
  procps            # pgrep and kill in the tests
  python3           # scripts/test-lanes.py (runs the tests); scripts/build-k8s.sh (module
                    # metadata, free ports)
  file              # scripts/build-k8s.sh checks that the binaries are static
  lintian           # checks the Debian package (scripts/package-deb.sh) in the package test
  binutils          # strip, for scripts/package-deb.sh
  dbus-daemon       # a private bus with a fake logind for the graceful node shutdown test
  curl              # HTTPS requests to the node API in its e2e tests (node_api_e2e,
                    # tls_bootstrap_e2e: a handshake verified with one CA only)
  openssl           # s_client + x509: the serial of the certificate the node API presents
)

usage() {
  echo "usage: $0 [--print] GROUP...   (GROUP: build, run, examples, test)" >&2
  exit 2
}
print=false
if [ "${1:-}" = --print ]; then print=true; shift; fi
[ $# -gt 0 ] || usage
pkgs=()
for g in "$@"; do
  case "$g" in
    build) pkgs+=("${build[@]}") ;;
    run) pkgs+=("${run[@]}") ;;
    examples) pkgs+=("${examples[@]}") ;;
    test) pkgs+=("${test[@]}") ;;
    *) usage ;;
  esac
done
if $print; then printf '%s\n' "${pkgs[@]}"; exit 0; fi

command -v dpkg-query >/dev/null \
  || { echo "$0: not a Debian system (no dpkg-query); install the equivalent of: ${pkgs[*]}" >&2; exit 1; }
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "missing Debian packages: ${missing[*]} (run as root to install them)" >&2
    exit 1
  fi
  echo "installing Debian packages: ${missing[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
  # docker-registry's package starts a system service on :5000; the tests start their own.
  if [[ " ${missing[*]} " == *" docker-registry "* ]] && command -v systemctl >/dev/null; then
    systemctl disable --now docker-registry >/dev/null 2>&1 || true
  fi
fi

if [[ " $* " == *" build "* ]] && ! command -v cargo >/dev/null; then
  echo "cargo is not on PATH: install Rust stable (https://rustup.rs) for the user running this;" \
    "sudo does not keep ~/.cargo/bin on PATH" >&2
  exit 1
fi
