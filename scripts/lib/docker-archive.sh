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
