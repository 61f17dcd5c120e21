#!/usr/bin/env python3
"""Profile the trio_sse benchmark server under a fan-out with py-spy.

Starts the trio_sse server (pinned to CPU 0), opens the connections with the
load client (CPU 1), and attaches ``py-spy record`` only while the events
flow, so connection set-up is not in the profile. Writes the collapsed
stacks to ``benchmarks/results/profile-<scenario>.txt`` (speedscope and
flamegraph.pl read this format) and prints where the time goes: by package
of the innermost frame, the hottest functions, and the share of samples
inside Hypercorn's send path versus trio_sse's own code.

    python benchmarks/profile.py [--conns 1000 --events 1000 --size 64]
"""

from __future__ import annotations

import argparse
import collections
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run


def category(frame: str) -> str:
    loc = frame.rsplit("(", 1)[-1]
    for name in ("trio_sse", "hypercorn", "h11", "h2", "trio"):
        if f"{name}/" in loc or loc.startswith(f"{name}/"):
            return name
    if "trio_sse_app" in loc or "_common" in loc:
        return "benchmark app"
    return "other (stdlib, ...)"


# Buckets for "where the time goes", first match wins (checked on the whole
# stack of a sample, from the rules' order).
BUCKETS = (
    # py-spy often sees only the innermost frames of a resumed coroutine, so
    # the send path is also recognised by its inner frames.
    (
        "Hypercorn send path (ASGI send -> h11 -> lock -> socket)",
        (
            "HTTPStream.app_send",
            "stream_send",
            "_send_h11_event",
            "protocol_send",
            "h11/",
            "trio/_socket.py",
            "trio/_highlevel_socket.py",
            "trio/_sync.py",
        ),
    ),
    ("publisher: Broadcaster.send fan-out", ("Broadcaster.send",)),
    ("trio_sse response writer (drain, encode, join)", ("_Run._write",)),
    ("trio_sse response, other", ("trio_sse/_response.py",)),
    ("Hypercorn reads / connection handling", ("hypercorn/",)),
    ("trio scheduler and I/O wait bookkeeping", ("trio/_core/",)),
)


def bucket(frames: list[str]) -> str:
    for name, needles in BUCKETS:
        if any(n in f for f in frames for n in needles):
            return name
    return "other"


def summarise(path: Path, top: int) -> str:
    by_bucket: collections.Counter[str] = collections.Counter()
    self_by_cat: collections.Counter[str] = collections.Counter()
    self_by_fn: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_s = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_s)
        frames = stack.split(";")
        total += count
        leaf = frames[-1]
        by_bucket[bucket(frames)] += count
        self_by_cat[category(leaf)] += count
        self_by_fn[leaf] += count
        seen = set()
        for frame in frames:
            fn = frame.split(" (", 1)[0]
            loc = frame.rsplit("(", 1)[-1]
            key = f"{fn} [{loc.split(':')[0]}]"
            if key not in seen:
                seen.add(key)
                incl[key] += count
    if not total:
        return "no samples\n"
    out = [f"{total} samples (CPU only, idle excluded)\n", "where the time goes:"]
    for name, n in by_bucket.most_common():
        out.append(f"  {100 * n / total:5.1f} %  {name}")
    out.append("\nself time by package:")
    for cat, n in self_by_cat.most_common():
        out.append(f"  {100 * n / total:5.1f} %  {cat}")
    out.append("\nhottest functions (self):")
    for fn, n in self_by_fn.most_common(top):
        out.append(f"  {100 * n / total:5.1f} %  {fn}")
    out.append("\ninclusive time (function on the stack):")
    for fn, n in incl.most_common(top + 15):
        out.append(f"  {100 * n / total:5.1f} %  {fn}")
    return "\n".join(out) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conns", type=int, default=1000)
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--rate", type=float, default=0.0)
    parser.add_argument("--duration", type=int, default=15)
    parser.add_argument("--name", default="fanout-1k")
    parser.add_argument("--top", type=int, default=25)
    opts = parser.parse_args()

    run.ensure_env(False)
    run.build_loadgen()
    run.RESULTS.mkdir(exist_ok=True)
    peer = run.make_peers()[run.TRIO_SSE]
    out = run.RESULTS / f"profile-{opts.name}.txt"
    log = run.RESULTS / "profile-server.log"
    pyspy = run.ENV / "bin" / "py-spy"
    with run.running_server(peer, max(1024, opts.events), 15.0, log) as (srv, port):
        cmd = [
            "taskset",
            "-c",
            run.CLIENT_CPU,
            str(run.LOADGEN),
            "--port",
            str(port),
            "--conns",
            str(opts.conns),
            "--events",
            str(opts.events),
            "--publish",
            f"/publish?n={opts.events}&size={opts.size}&rate={opts.rate:g}",
            "--timeout",
            str(opts.duration),
            "--stall",
            "5",
        ]
        client = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, text=True, start_new_session=True
        )
        spy = None
        result = ""
        try:
            assert client.stdout is not None
            for line in client.stdout:
                if line.startswith("#publish"):
                    spy = subprocess.Popen(
                        [
                            "taskset",
                            "-c",
                            run.CLIENT_CPU,
                            str(pyspy),
                            "record",
                            "--pid",
                            str(srv.pid),
                            "--rate",
                            "250",
                            "--format",
                            "raw",
                            "--output",
                            str(out),
                            "--duration",
                            str(opts.duration),
                            "--nonblocking",
                        ],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                        start_new_session=True,
                    )
                elif line.strip():
                    result = line
            client.wait(opts.duration + 60)
        finally:
            run.stop(client)
            if spy is not None:
                # py-spy writes its output when the traced process ends or
                # the duration is over; stopping the server ends it.
                time.sleep(0.2)
    if spy is not None:
        try:
            spy.wait(30)
        except subprocess.TimeoutExpired:
            run.stop(spy)
    print("load client:", result.strip()[:300])
    if out.exists():
        summary = summarise(out, opts.top)
        (run.RESULTS / f"profile-{opts.name}-summary.txt").write_text(summary)
        print(summary)
        print(f"stacks: {out.relative_to(run.REPO)} (open in speedscope.app)")


if __name__ == "__main__":
    main()
