#!/usr/bin/env bash
# Builds a busybox image as a docker-archive tarball from Debian's busybox-static, offline.
# Usage: scripts/busybox-image.sh OUT.tar [REFERENCE]   (default docker.io/library/busybox:latest)
set -euo pipefail
# shellcheck source=lib/docker-archive.sh
. "$(dirname "$0")/lib/docker-archive.sh"
out=$(realpath -m "$1"); ref=${2:-docker.io/library/busybox:latest}
bb=/bin/busybox
[ -x "$bb" ] || { echo "busybox-static is not installed ($bb missing)" >&2; exit 1; }
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
root="$work/rootfs"; mkdir -p "$root"/{bin,etc,tmp,www,root,var/www}
cp "$bb" "$root/bin/busybox"
for a in $("$bb" --list); do [ "$a" = busybox ] || ln -sf busybox "$root/bin/$a"; done
chmod 1777 "$root/tmp"
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\nweb:x:1000:1000:web:/:/bin/sh\n' > "$root/etc/passwd"
printf 'root:x:0:\nnobody:x:65534:\nweb:x:1000:\n' > "$root/etc/group"
docker_archive "$root" "$out" "$ref"
echo "$out ($ref)"
