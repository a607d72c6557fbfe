#!/usr/bin/env bash
# Resident memory of a shim supervising a running container, after its re-exec into `monitor`
# mode: VmRSS, RssAnon and RssFile from /proc/PID/status, median of RUNS runs. As root, with
# busybox-static (the shim crate's real-container test `shim_resident_memory_is_small` runs the
# container; the shim under test is BINARY, by default a fresh `--profile shim` build).
#
#   bench/shim_rss.sh [BINARY] [RUNS]
#
# EVICT=1 drops BINARY's pages from the page cache before each run, so they come back through the
# shim's own page faults (as after a reboot) rather than as left by whatever wrote the file: the
# kernel maps file pages a page-cache folio at a time, so the two differ. The budget is 1.5 MiB;
# the script exits 1 when the median VmRSS is over it. Per-mapping Rss of each run is in the
# file named on the last line. conmon (with runc, same command) is measured beside it when
# installed.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -ge 1 ]; then
  exe=$(readlink -f "$1")
else
  cargo build -q --profile shim -p staticlet-shim
  exe="${CARGO_TARGET_DIR:-$PWD/target}/shim/staticlet-shim"
fi
runs=${2:-3}
log=$(mktemp /tmp/shim-rss.XXXXXX)
for _ in $(seq "$runs"); do
  if [ "${EVICT:-0}" = 1 ]; then
    python3 -c 'import os, sys; fd = os.open(sys.argv[1], os.O_RDONLY); os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)' "$exe"
  fi
  STATICLET_SHIM_TEST_EXE="$exe" cargo test -q -p staticlet-shim --test containers \
    -- --exact shim_resident_memory_is_small --nocapture 2>&1 | grep -E '^(shim|  )' >> "$log"
done
# The peer, measured the same way: conmon (podman's and CRI-O's per-container monitor) supervising
# `runc` running the same command in a busybox-static rootfs.
conmon_rss() {
  command -v conmon >/dev/null && command -v runc >/dev/null || { echo "conmon: not installed"; return; }
  local d; d=$(mktemp -d /tmp/conmon-rss.XXXXXX)
  mkdir -p "$d/b/rootfs/bin" "$d/exit" "$d/sock"
  cp "$(command -v busybox)" "$d/b/rootfs/bin/"
  ln -s busybox "$d/b/rootfs/bin/sleep"
  (cd "$d/b" && runc spec)
  python3 - "$d/b/config.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
s["process"]["args"] = ["sleep", "3600"]
s["process"]["terminal"] = False
s["linux"]["namespaces"] = [n for n in s["linux"]["namespaces"] if n["type"] != "network"]
json.dump(s, open(sys.argv[1], "w"))
PY
  for i in $(seq "$runs"); do
    local id="conmon-rss-$$-$i"
    conmon --api-version 1 -c "$id" -u "$id" -n "$id" -r "$(command -v runc)" -b "$d/b" \
      -p "$d/pid$i" --exit-dir "$d/exit" -l "k8s-file:$d/log$i" --socket-dir-path "$d/sock" \
      --conmon-pidfile "$d/cpid$i" --log-level error
    # conmon forks and has runc create the container: start it once runc wrote its pid.
    for _ in $(seq 300); do [ -s "$d/pid$i" ] && break; sleep 0.05; done
    runc start "$id"
    sleep 1 # let conmon settle after the start, as the shim test waits for its container
    echo "conmon $(grep -E 'VmRSS|RssAnon|RssFile' "/proc/$(cat "$d/cpid$i")/status" | tr -s ' \t' ' ' | tr '\n' ' ')" >> "$log"
    runc delete -f "$id" >/dev/null 2>&1 || true
  done
  rm -rf "$d"
}
conmon_rss
python3 - "$log" "$exe" <<'PY'
import re, statistics, sys
rows = [tuple(map(int, re.findall(r"(\d+) kB", l))) for l in open(sys.argv[1]) if l.startswith("shim VmRSS")]
if not rows:
    sys.exit("no measurement: see " + sys.argv[1])
for r in rows:
    print("VmRSS %5d kB  RssAnon %5d kB  RssFile %5d kB" % r)
rss, anon, file = (statistics.median(c) for c in zip(*rows))
print("%s: median of %d: VmRSS %d kB (RssAnon %d kB, RssFile %d kB)" % (sys.argv[2], len(rows), rss, anon, file))
peer = [tuple(map(int, re.findall(r"(\d+) kB", l))) for l in open(sys.argv[1]) if l.startswith("conmon VmRSS")]
if peer:
    rss_c, anon_c, file_c = (statistics.median(c) for c in zip(*peer))
    print("conmon + runc (the peer): median of %d: VmRSS %d kB (RssAnon %d kB, RssFile %d kB)" % (len(peer), rss_c, anon_c, file_c))
print("per mapping: " + sys.argv[1])
sys.exit(0 if rss <= 1536 else 1)
PY
