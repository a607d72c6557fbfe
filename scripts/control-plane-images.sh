#!/usr/bin/env bash
# Packs the Kubernetes control-plane binaries built by scripts/build-k8s.sh into local images,
# tagged exactly as kubeadm's manifests name them (`kubeadm config images list`), as
# docker-archive tarballs for `staticlet images import`. Offline.
#
# Usage: scripts/control-plane-images.sh OUT_DIR [BIN_DIR]
#   BIN_DIR defaults to $STATICLET_K8S_BIN, else the last line printed by scripts/build-k8s.sh.
#   Writes OUT_DIR/{kube-apiserver,kube-controller-manager,kube-scheduler,etcd}.tar and prints
#   one "FILE REFERENCE" line per image.
# With CONTROL_PLANE_PLACEHOLDERS=1, the other images kubeadm pulls (pause, coredns, kube-proxy)
# are written too, as placeholders: busybox only, whose entrypoint says it is a placeholder and
# fails. kubeadm's preflight pulls them through CRI; on a staticlet node they are never run
# (kube-proxy's and coredns' pods are scheduled pods, which staticlet does not run).
# Each image holds one static binary in /usr/local/bin, /etc/passwd, /etc/group, /tmp, and the
# busybox-static userland (for `staticlet exec` and debugging; kubeadm's etcd probes need none).
# With CONTROL_PLANE_COMPRESSION="gzip zstd" (any of gzip, zstd, none), each of the four is also
# written as an OCI archive with its layer compressed so, OUT_DIR/NAME.oci-COMPRESSION.tar (same
# reference and content), and so is one multi-layer image of all four,
# OUT_DIR/control-plane-layers.oci-COMPRESSION.tar (`staticlet.local/control-plane-layers:VERSION`:
# the busybox userland, then one layer per binary; for bench/images.py).
set -euo pipefail
here=$(dirname "$0")
# shellcheck source=lib/docker-archive.sh
. "$here/lib/docker-archive.sh"
out=$(realpath -m "${1:?usage: $0 OUT_DIR [BIN_DIR]}")
bin=${2:-${STATICLET_K8S_BIN:-}}
[ -n "$bin" ] || bin=$("$here/build-k8s.sh" | tail -n1)
[ -x "$bin/kubeadm" ] || { echo "no kubeadm in $bin (run scripts/build-k8s.sh)" >&2; exit 1; }
[ -x /bin/busybox ] || { echo "busybox-static is not installed (/bin/busybox missing)" >&2; exit 1; }
ver=$("$bin/kubeadm" version -o short)
compressions=${CONTROL_PLANE_COMPRESSION:-}
mkdir -p "$out"
"$bin/kubeadm" config images list --kubernetes-version "$ver" 2>/dev/null | while read -r ref; do
  name=${ref##*/}; name=${name%%:*}
  case "$name" in
    kube-apiserver|kube-controller-manager|kube-scheduler|etcd) ;;
    *)
      [ "${CONTROL_PLANE_PLACEHOLDERS:-}" = 1 ] || continue
      work=$(mktemp -d)
      root="$work/rootfs"; mkdir -p "$root"/{bin,tmp}
      cp /bin/busybox "$root/bin/busybox"; ln -sf busybox "$root/bin/sh"
      docker_archive "$root" "$out/$name.tar" "$ref" \
        "{\"Env\":[\"PATH=/bin\"],\"Entrypoint\":[\"/bin/sh\",\"-c\",\"echo 'placeholder image (scripts/control-plane-images.sh): not runnable' >&2; exit 1\"],\"WorkingDir\":\"/\"}"
      rm -rf "$work"
      echo "$out/$name.tar $ref"
      continue ;;
  esac
  [ -x "$bin/$name" ] || { echo "missing $bin/$name" >&2; exit 1; }
  work=$(mktemp -d)
  root="$work/rootfs"; mkdir -p "$root"/{bin,etc,tmp,usr/local/bin,var/run}
  cp "$bin/$name" "$root/usr/local/bin/$name"
  cp /bin/busybox "$root/bin/busybox"
  for a in sh ls cat ps kill sleep; do ln -sf busybox "$root/bin/$a"; done
  chmod 1777 "$root/tmp"
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' > "$root/etc/passwd"
  printf 'root:x:0:\nnobody:x:65534:\n' > "$root/etc/group"
  config="{\"Env\":[\"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\"],\"Entrypoint\":[\"/usr/local/bin/$name\"],\"WorkingDir\":\"/\"}"
  docker_archive "$root" "$out/$name.tar" "$ref" "$config"
  echo "$out/$name.tar $ref"
  for c in $compressions; do
    oci_archive "$out/$name.oci-$c.tar" "$ref" "$c" "$config" "$root"
    echo "$out/$name.oci-$c.tar $ref"
  done
  rm -rf "$work"
done
if [ -n "$compressions" ]; then
  # One image, five layers: the userland of the images above, then each binary on its own.
  work=$(mktemp -d)
  base="$work/base"; mkdir -p "$base"/{bin,etc,tmp,usr/local/bin,var/run}
  cp /bin/busybox "$base/bin/busybox"
  for a in sh ls cat ps kill sleep; do ln -sf busybox "$base/bin/$a"; done
  chmod 1777 "$base/tmp"
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' > "$base/etc/passwd"
  printf 'root:x:0:\nnobody:x:65534:\n' > "$base/etc/group"
  roots=("$base")
  for name in etcd kube-apiserver kube-controller-manager kube-scheduler; do
    mkdir -p "$work/$name/usr/local/bin"; cp "$bin/$name" "$work/$name/usr/local/bin/$name"
    roots+=("$work/$name")
  done
  ref="staticlet.local/control-plane-layers:$ver"
  for c in $compressions; do
    oci_archive "$out/control-plane-layers.oci-$c.tar" "$ref" "$c" \
      '{"Env":["PATH=/usr/local/bin:/bin"],"Cmd":["sh"],"WorkingDir":"/"}' "${roots[@]}"
    echo "$out/control-plane-layers.oci-$c.tar $ref"
  done
  rm -rf "$work"
fi
