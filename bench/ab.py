#!/usr/bin/env python3
"""Two staticlet builds side by side, interleaved (A B A B ...), with bench/startup.py's
measurements: 1 pod started ROUNDS times one after the other (manifest written -> process runs,
p50 / p90 / max, and -> the API's Running event), and with --burst N, N pods at once.

With --fsync-load, a thread appends 4 KiB blocks to a file on the same disk and fsyncs each,
without pause (an etcd WAL's pattern on a control-plane node), for the whole run.

Usage (root): bench/ab.py DIR_A DIR_B [--rounds 20] [--reps 3] [--burst N] [--fsync-load]
Each DIR holds a `staticlet` and its `staticlet-shim` (e.g. copies of target/release/staticlet
and target/shim/staticlet-shim of two commits). Prints each run as it ends, then the median and
range over the reps.
"""
import argparse, os, shutil, statistics, sys, tempfile, threading, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import startup as S  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--burst", type=int, default=0)
    ap.add_argument("--fsync-load", action="store_true")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root")
    work = tempfile.mkdtemp(prefix="staticlet-ab-", dir="/var/tmp")
    S.sh(os.path.join(S.REPO, "scripts/busybox-image.sh"), os.path.join(work, "busybox.tar"))
    stop, fsyncs = threading.Event(), [0]

    def writer():
        fd = os.open(os.path.join(work, "wal"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        while not stop.is_set():
            os.write(fd, b"x" * 4096)
            os.fsync(fd)
            fsyncs[0] += 1

    if args.fsync_load:
        threading.Thread(target=writer, daemon=True).start()
    t0 = time.time()
    cols = ["p50", "p90", "max", "api p50"] + (["burst p50", "burst max"] if args.burst else [])
    res = {args.a: [], args.b: []}
    for rep in range(args.reps):
        for d in (args.a, args.b):
            S.BIN = os.path.join(d, "staticlet")
            w = os.path.join(work, f"{rep}-{len(res[d])}-{os.path.basename(d.rstrip('/'))}")
            os.makedirs(w)
            shutil.copy(os.path.join(work, "busybox.tar"), w)
            one, api, _, _ = S.staticlet_run(w, 1, args.rounds)
            row = [S.pct(one, 50), S.pct(one, 90), max(one), S.pct(api, 50)]
            if args.burst:
                many, _, _, _ = S.staticlet_run(w, args.burst, 1)
                row += [S.pct(many, 50), max(many)]
            row = [x * 1000 for x in row]
            res[d].append(row)
            print(d, " ".join(f"{c} {x:.1f}" for c, x in zip(cols, row)), flush=True)
            shutil.rmtree(w, ignore_errors=True)
    stop.set()
    if args.fsync_load:
        print(f"background fsyncs: {fsyncs[0] / (time.time() - t0):.0f}/s")
    print(f"{'ms':10}" + "".join(f"{os.path.basename(d.rstrip('/')):>26}" for d in (args.a, args.b)))
    for i, c in enumerate(cols):
        cells = []
        for d in (args.a, args.b):
            xs = [r[i] for r in res[d]]
            cells.append(f"{statistics.median(xs):.1f} ({min(xs):.1f}-{max(xs):.1f})")
        print(f"{c:10}" + "".join(f"{x:>26}" for x in cells))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
