# shellcheck shell=bash
# docker_archive ROOTFS OUT.tar REFERENCE [CONFIG_JSON_FRAGMENT]
# Packs the directory ROOTFS as a one-layer image into a docker-archive tarball (as `docker save`
# writes it), reproducibly (fixed owner, mtime and order). CONFIG_JSON_FRAGMENT is the image's
# "config" object (default: PATH and `sh`).
docker_archive() {
  local root=$1 out=$2 ref=$3
  local config=${4:-'{"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],"Cmd":["sh"],"WorkingDir":"/"}'}
  local work diff cfg arch
  work=$(mktemp -d)
  tar --sort=name --owner=0 --group=0 --numeric-owner --mtime='2024-01-01 00:00Z' -C "$root" -cf "$work/layer.tar" .
  diff=$(sha256sum "$work/layer.tar" | cut -d' ' -f1)
  mkdir -p "$work/img/$diff"; mv "$work/layer.tar" "$work/img/$diff/layer.tar"
  arch=$(dpkg --print-architecture)
  printf '{"architecture":"%s","os":"linux","config":%s,"rootfs":{"type":"layers","diff_ids":["sha256:%s"]},"history":[{"created_by":"staticlet scripts"}]}\n' \
    "$arch" "$config" "$diff" > "$work/config.json"
  cfg=$(sha256sum "$work/config.json" | cut -d' ' -f1)
  mv "$work/config.json" "$work/img/$cfg.json"
  printf '[{"Config":"%s.json","RepoTags":["%s"],"Layers":["%s/layer.tar"]}]\n' "$cfg" "$ref" "$diff" > "$work/img/manifest.json"
  tar --sort=name --owner=0 --group=0 --numeric-owner --mtime='2024-01-01 00:00Z' -C "$work/img" -cf "$out" .
  rm -rf "$work"
}

# oci_archive OUT.tar REFERENCE COMPRESSION CONFIG_JSON_FRAGMENT ROOTFS...
# Packs the directories ROOTFS... as the layers of one image (lowest first) into an OCI archive
# (a tar of an OCI image layout), reproducibly like docker_archive. COMPRESSION is gzip, zstd or
# none (gzip -6 -n, zstd -3: what `docker push`/buildkit use by default). The index names the
# image with `io.containerd.image.name` (ctr and staticlet read it) and its tag with
# `org.opencontainers.image.ref.name`.
oci_archive() {
  local out=$1 ref=$2 comp=$3 config=$4; shift 4
  local work arch i root diff blob size mt layers="" diffs="" cfg cfg_size man man_size
  case "$comp" in gzip|zstd|none) ;; *) echo "oci_archive: unknown compression $comp" >&2; return 1 ;; esac
  work=$(mktemp -d)
  mkdir -p "$work/img/blobs/sha256"
  i=0
  for root in "$@"; do
    tar --sort=name --owner=0 --group=0 --numeric-owner --mtime='2024-01-01 00:00Z' -C "$root" -cf "$work/l$i.tar" .
    diff=$(sha256sum "$work/l$i.tar" | cut -d' ' -f1)
    case "$comp" in
      gzip) gzip -6 -n -c "$work/l$i.tar" > "$work/l$i.blob"; mt=application/vnd.oci.image.layer.v1.tar+gzip ;;
      zstd) zstd -3 -q -c "$work/l$i.tar" > "$work/l$i.blob"; mt=application/vnd.oci.image.layer.v1.tar+zstd ;;
      none) mv "$work/l$i.tar" "$work/l$i.blob"; mt=application/vnd.oci.image.layer.v1.tar ;;
    esac
    rm -f "$work/l$i.tar"
    blob=$(sha256sum "$work/l$i.blob" | cut -d' ' -f1)
    size=$(stat -c %s "$work/l$i.blob")
    mv "$work/l$i.blob" "$work/img/blobs/sha256/$blob"
    layers="$layers${layers:+,}{\"mediaType\":\"$mt\",\"digest\":\"sha256:$blob\",\"size\":$size}"
    diffs="$diffs${diffs:+,}\"sha256:$diff\""
    i=$((i + 1))
  done
  arch=$(dpkg --print-architecture)
  printf '{"architecture":"%s","os":"linux","config":%s,"rootfs":{"type":"layers","diff_ids":[%s]},"history":[{"created_by":"staticlet scripts"}]}\n' \
    "$arch" "$config" "$diffs" > "$work/config.json"
  cfg=$(sha256sum "$work/config.json" | cut -d' ' -f1); cfg_size=$(stat -c %s "$work/config.json")
  mv "$work/config.json" "$work/img/blobs/sha256/$cfg"
  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[%s]}\n' \
    "$cfg" "$cfg_size" "$layers" > "$work/manifest.json"
  man=$(sha256sum "$work/manifest.json" | cut -d' ' -f1); man_size=$(stat -c %s "$work/manifest.json")
  mv "$work/manifest.json" "$work/img/blobs/sha256/$man"
  printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"io.containerd.image.name":"%s","org.opencontainers.image.ref.name":"%s"}}]}\n' \
    "$man" "$man_size" "$ref" "${ref##*:}" > "$work/img/index.json"
  printf '{"imageLayoutVersion":"1.0.0"}\n' > "$work/img/oci-layout"
  tar --sort=name --owner=0 --group=0 --numeric-owner --mtime='2024-01-01 00:00Z' -C "$work/img" -cf "$out" .
  rm -rf "$work"
}
