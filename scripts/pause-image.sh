#!/usr/bin/env bash
# Builds a pause (sandbox) image as a docker-archive tarball, offline: a tiny static C program
# that sleeps in pause() until SIGTERM/SIGINT and reaps children, like the upstream pause image.
# Usage: scripts/pause-image.sh OUT.tar [REFERENCE]   (default registry.k8s.io/pause:3.6)
set -euo pipefail
out=$(realpath -m "$1"); ref=${2:-registry.k8s.io/pause:3.6}
command -v gcc >/dev/null || { echo "gcc is not installed" >&2; exit 1; }
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
root="$work/rootfs"; mkdir -p "$root"
cat > "$work/pause.c" <<'C'
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
static void on_term(int sig) { (void)sig; _exit(0); }
static void on_chld(int sig) { (void)sig; while (waitpid(-1, 0, WNOHANG) > 0) {} }
int main(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_term;
  sigaction(SIGINT, &sa, 0);
  sigaction(SIGTERM, &sa, 0);
  sa.sa_handler = on_chld;
  sa.sa_flags = SA_NOCLDSTOP;
  sigaction(SIGCHLD, &sa, 0);
  for (;;) pause();
}
C
gcc -static -Os -s -o "$root/pause" "$work/pause.c"
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime='2024-01-01 00:00Z' -C "$root" -cf "$work/layer.tar" .
diff=$(sha256sum "$work/layer.tar" | cut -d' ' -f1)
mkdir -p "$work/img/$diff"; mv "$work/layer.tar" "$work/img/$diff/layer.tar"
arch=$(dpkg --print-architecture)
cat > "$work/config.json" <<JSON
{"architecture":"$arch","os":"linux","config":{"Entrypoint":["/pause"],"WorkingDir":"/"},"rootfs":{"type":"layers","diff_ids":["sha256:$diff"]},"history":[{"created_by":"scripts/pause-image.sh"}]}
JSON
cfg=$(sha256sum "$work/config.json" | cut -d' ' -f1)
mv "$work/config.json" "$work/img/$cfg.json"
printf '[{"Config":"%s.json","RepoTags":["%s"],"Layers":["%s/layer.tar"]}]\n' "$cfg" "$ref" "$diff" > "$work/img/manifest.json"
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime='2024-01-01 00:00Z' -C "$work/img" -cf "$out" .
echo "$out ($ref)"
