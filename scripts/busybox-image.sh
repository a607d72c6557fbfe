#!/usr/bin/env bash
# Builds a busybox image as a docker-archive tarball from Debian's busybox-static, offline.
# Usage: scripts/busybox-image.sh OUT.tar [REFERENCE]   (default docker.io/library/busybox:latest)
set -euo pipefail
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
# A reproducible layer: fixed owner, mtime and order.
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime='2024-01-01 00:00Z' -C "$root" -cf "$work/layer.tar" .
diff=$(sha256sum "$work/layer.tar" | cut -d' ' -f1)
mkdir -p "$work/img/$diff"; mv "$work/layer.tar" "$work/img/$diff/layer.tar"
arch=$(dpkg --print-architecture)
cat > "$work/config.json" <<JSON
{"architecture":"$arch","os":"linux","config":{"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],"Cmd":["sh"],"WorkingDir":"/"},"rootfs":{"type":"layers","diff_ids":["sha256:$diff"]},"history":[{"created_by":"scripts/busybox-image.sh"}]}
JSON
cfg=$(sha256sum "$work/config.json" | cut -d' ' -f1)
mv "$work/config.json" "$work/img/$cfg.json"
printf '[{"Config":"%s.json","RepoTags":["%s"],"Layers":["%s/layer.tar"]}]\n' "$cfg" "$ref" "$diff" > "$work/img/manifest.json"
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime='2024-01-01 00:00Z' -C "$work/img" -cf "$out" .
echo "$out ($ref)"
