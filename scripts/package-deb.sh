#!/usr/bin/env bash
# Builds the Debian package: scripts/package-deb.sh [--bin-dir DIR] OUT_DIR
#
# Contents: /usr/bin/staticlet and /usr/bin/staticlet-shim (stripped), the systemd unit
# (packaging/systemd/staticlet.service), /etc/staticlet/config.yaml (a conffile), kubeadm's
# kubelet drop-in as an example, shell completions (bash, zsh, fish) and man pages generated
# by the binary itself, the maintainer scripts (packaging/deb). Depends: the run-time group of
# scripts/deps.sh plus the packages of the shared libraries the binaries link.
#
# Without --bin-dir the release binaries are built first, as scripts/quickstart.sh builds them
# (the shim with its small profile). --bin-dir takes staticlet and staticlet-shim from DIR
# (the package test uses the debug build). Prints the path of the .deb; dpkg-deb's
# DPKG_DEB_COMPRESSOR_TYPE / DPKG_DEB_COMPRESSOR_LEVEL choose the compression (default xz).
set -euo pipefail
cd "$(dirname "$0")/.."

bin_dir=""
if [ "${1:-}" = --bin-dir ]; then bin_dir="$2"; shift 2; fi
[ $# -eq 1 ] || { echo "usage: $0 [--bin-dir DIR] OUT_DIR" >&2; exit 2; }
out=$(mkdir -p "$1" && cd "$1" && pwd)

if [ -z "$bin_dir" ]; then
  ./scripts/deps.sh build run
  cargo build --release -p staticlet >&2
  cargo build --profile shim -p staticlet-shim >&2
  install -m 0755 target/shim/staticlet-shim target/release/staticlet-shim
  bin_dir=target/release
fi
for b in staticlet staticlet-shim; do
  [ -x "$bin_dir/$b" ] || { echo "$0: no executable $bin_dir/$b" >&2; exit 1; }
done

version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
arch=$(dpkg --print-architecture)
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
pkg="$root/staticlet"
doc="$pkg/usr/share/doc/staticlet"

install -d "$pkg/DEBIAN" "$pkg/usr/bin" "$doc" "$pkg/etc/staticlet" \
  "$pkg/lib/systemd/system" "$pkg/usr/share/man/man1" \
  "$pkg/usr/share/bash-completion/completions" "$pkg/usr/share/zsh/vendor-completions" \
  "$pkg/usr/share/fish/vendor_completions.d"
for b in staticlet staticlet-shim; do
  install -m 0755 "$bin_dir/$b" "$pkg/usr/bin/$b"
  strip --strip-unneeded --remove-section=.comment --remove-section=.note "$pkg/usr/bin/$b"
done
install -m 0644 packaging/systemd/staticlet.service "$pkg/lib/systemd/system/"
install -m 0644 packaging/config.yaml "$pkg/etc/staticlet/config.yaml"
install -m 0644 packaging/systemd/10-kubeadm.conf "$doc/10-kubeadm.conf"
install -m 0644 packaging/deb/copyright "$doc/copyright"
st="$pkg/usr/bin/staticlet"
"$st" completion bash >"$pkg/usr/share/bash-completion/completions/staticlet"
"$st" completion zsh >"$pkg/usr/share/zsh/vendor-completions/_staticlet"
"$st" completion fish >"$pkg/usr/share/fish/vendor_completions.d/staticlet.fish"
"$st" man "$pkg/usr/share/man/man1" >/dev/null
install -m 0644 packaging/staticlet-shim.1 "$pkg/usr/share/man/man1/"
gzip -9n "$pkg"/usr/share/man/man1/*.1
commit=$("$st" --version | sed -n 's/.*(commit \(.*\))/\1/p')
{
  echo "staticlet ($version) unstable; urgency=medium"
  echo
  echo "  * Built from commit $commit."
  echo
  echo " -- staticlet developers <dev@staticlet.invalid>  $(date -R -d "@${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}")"
} | gzip -9n >"$doc/changelog.gz"
find "$pkg" -type d -exec chmod 0755 {} +
install -m 0755 packaging/deb/postinst packaging/deb/prerm packaging/deb/postrm "$pkg/DEBIAN/"
echo /etc/staticlet/config.yaml >"$pkg/DEBIAN/conffiles"

# Depends: what the embedded runtime runs (scripts/deps.sh run) and the packages owning the
# shared libraries the binaries link, at least the installed versions.
depends=()
for lib in $( (ldd "$pkg/usr/bin/staticlet"; ldd "$pkg/usr/bin/staticlet-shim") |
  awk '$2 == "=>" && $3 ~ /^\// { print $3 }' | sort -u); do
  p=$(dpkg -S "$(readlink -f "$lib")" 2>/dev/null | head -n 1 | cut -d: -f1) ||
    p=$(dpkg -S "$lib" 2>/dev/null | head -n 1 | cut -d: -f1) || true
  [ -n "$p" ] || { echo "$0: no package owns $lib" >&2; exit 1; }
  v=$(dpkg-query -W -f='${Version}' "$p")
  depends+=("$p (>= ${v%%-*})")
done
# Essential packages (util-linux) are never listed (Debian policy 3.5).
while read -r p; do
  [ "$(dpkg-query -W -f='${Essential}' "$p" 2>/dev/null)" = yes ] || depends+=("$p")
done < <(./scripts/deps.sh --print run)
depends_line=$(printf '%s\n' "${depends[@]}" | sort -u | paste -sd, - | sed 's/,/, /g')

cat >"$pkg/DEBIAN/control" <<EOF
Package: staticlet
Version: $version
Architecture: $arch
Maintainer: staticlet developers <dev@staticlet.invalid>
Installed-Size: $(du -sk --exclude=DEBIAN "$pkg" | cut -f1)
Depends: $depends_line
Section: admin
Priority: optional
Homepage: https://github.com/staticlet/staticlet
Description: node agent for Kubernetes static pods
 staticlet runs the static pods of a node: it reads Pod manifests from a
 directory (/etc/kubernetes/manifests) or a URL, starts them at boot with its
 embedded container runtime (or containerd and CRI-O through CRI), restarts
 them on failure and stops them when their manifest is removed. With a
 kubeconfig it joins a Kubernetes cluster as the node's static-pod agent:
 mirror pods, the Node, its Lease, and kubelet's node API for kubectl logs,
 exec, port-forward and top.
EOF

deb="$out/staticlet_${version}_${arch}.deb"
# xz by default; DPKG_DEB_COMPRESSOR_TYPE / _LEVEL (dpkg-deb's own) choose otherwise.
dpkg-deb --root-owner-group --build "$pkg" "$deb" >&2
echo "$deb"
