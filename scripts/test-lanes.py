#!/usr/bin/env python3
"""Runs the workspace's test binaries in two lanes at once, as `cargo test` would run them one
after the other (scripts/test.sh builds them first with `cargo test --no-run`).

Most of the suite's wall time is spent waiting on real processes (containers starting, grace
periods, back-off, probes), not on the CPU, so two binaries at a time halve it on 2 cores. The
lanes are fixed so that tests that cannot share the machine never overlap:

- lane "cluster": the tests that run a real control plane or the agent's fixed ports (kubeadm's
  etcd on 2379-2381, the kubelet ports 10248/10250), one after the other;
- lane "node": everything else (each of those binaries uses only its own temporary directories,
  free ports and names), longest first (the scenarios as two items, one per runtime); once the
  cluster lane is done it takes the next of these too, so both lanes end together. The
  kubeadm join test runs its two control-plane nodes in network namespaces of their own (etcd's
  and the kubelet ports are theirs, not the machine's), so it is one of these.

Each binary runs from its package's directory, as cargo runs it; its output goes to
target/test-logs/<package>.<target>.log and is printed in full when it fails. Prints a timing
table at the end; exits 1 if any binary failed.

Usage: cargo test --no-run --message-format=json ... | scripts/test-lanes.py [-- TEST ARGS]
"""

import json
import os
import subprocess
import sys
import threading
import time

# Binaries (cargo target names) of the "cluster" lane, in the order they run.
CLUSTER = [
    "tls_bootstrap_e2e",  # a real API server and controller-manager (free ports; CPU-heavy)
    "control_plane_e2e",
    "kubeadm_init_e2e",
    "mirror_e2e",
    "node_api_e2e",
    "control_plane",  # staticlet-k8s-testenv's own test
    "service",
]
# Known long binaries of the "node" lane, run first so the lanes end together.
NODE_FIRST = ["soak", "scenarios", "crash", "kubeadm_join_e2e", "cli", "e2e"]
# Binaries run as several items, one per test name filter (the scenarios binary runs every
# scenario on both runtimes: one item per runtime).
SPLIT = {"scenarios": ["::embedded::", "::containerd::"]}


def binaries(stream):
    out = []
    for line in stream:
        try:
            msg = json.loads(line)
        except json.JSONDecodeError:
            continue
        if msg.get("reason") != "compiler-artifact" or not msg.get("executable"):
            continue
        if not msg.get("profile", {}).get("test"):
            continue
        target = msg["target"]
        pkg = msg["package_id"]
        # "path+file:///w/crates/agent#staticlet-agent@0.1.0", "path+file:///w/crates/cni#0.1.0"
        # (the name is the directory's) or, before cargo 1.77, "name 0.1.0 (path+file:///...)".
        if "#" in pkg:
            url, frag = pkg.split("#", 1)
            name = frag.split("@")[0] if "@" in frag else url.rstrip("/").split("/")[-1]
        else:
            name = pkg.split()[0]
        out.append(
            {
                "package": name,
                "target": target["name"],
                "kind": target["kind"][0],
                "exe": msg["executable"],
                "cwd": os.path.dirname(msg["manifest_path"]),
            }
        )
    return out


def run_lane(name, items, shared, args, logdir, results, lock):
    """Runs `items` in order, then takes from `shared` (the node lane's queue, longest first,
    safe beside anything) until it is empty."""
    items = list(items)
    while True:
        with lock:
            if items:
                b = items.pop(0)
            elif shared:
                b = shared.pop(0)
            else:
                return
        flt = b.get("filter")
        label = f"{b['package']} {b['kind']} {b['target']}" + (f" {flt}" if flt else "")
        part = f".{flt.strip(':')}" if flt else ""
        log = os.path.join(logdir, f"{b['package']}.{b['target']}{part}.log")
        t0 = time.monotonic()
        cmd = [b["exe"], *args, *([flt] if flt else [])]
        with open(log, "wb") as f:
            rc = subprocess.call(cmd, cwd=b["cwd"], stdout=f, stderr=subprocess.STDOUT)
        dt = time.monotonic() - t0
        with lock:
            results.append((label, name, dt, rc, log))
            status = "ok" if rc == 0 else f"FAILED (exit {rc})"
            print(f"[{name:7}] {label}: {status} in {dt:.1f} s", flush=True)
            if rc != 0:
                with open(log, errors="replace") as f:
                    sys.stdout.write(f.read())
                print(f"[{name:7}] end of {label}'s output ({log})", flush=True)


def main():
    args = sys.argv[1:]
    if args and args[0] == "--":
        args = args[1:]
    bins = binaries(sys.stdin)
    if not bins:
        print("test-lanes: no test binaries in cargo's output", file=sys.stderr)
        return 2
    logdir = os.path.join(os.environ.get("CARGO_TARGET_DIR", "target"), "test-logs")
    os.makedirs(logdir, exist_ok=True)

    cluster = sorted(
        (b for b in bins if b["target"] in CLUSTER), key=lambda b: CLUSTER.index(b["target"])
    )
    rest = []
    for b in bins:
        if b["target"] in CLUSTER:
            continue
        filters = SPLIT.get(b["target"]) if b["kind"] == "test" else None
        rest.extend([dict(b, filter=f) for f in filters] if filters else [b])
    first = [b for t in NODE_FIRST for b in rest if b["target"] == t and b["kind"] == "test"]
    node = first + [b for b in rest if b not in first]

    results, lock = [], threading.Lock()
    t0 = time.monotonic()
    lanes = [
        threading.Thread(target=run_lane, args=(n, items, node, args, logdir, results, lock))
        for n, items in (("cluster", cluster), ("node", []))
    ]
    for t in lanes:
        t.start()
    for t in lanes:
        t.join()
    total = time.monotonic() - t0

    print(f"\ntest binaries by time (two lanes, {total:.0f} s wall):")
    for label, lane, dt, rc, _ in sorted(results, key=lambda r: -r[2]):
        if dt >= 1 or rc != 0:
            print(f"  {dt:7.1f} s  {lane:7}  {label}{'  FAILED' if rc else ''}")
    failed = [r for r in results if r[3] != 0]
    if failed:
        print(f"\n{len(failed)} test binaries FAILED: " + ", ".join(r[0] for r in failed))
        return 1
    print(f"all {len(results)} test binaries passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
