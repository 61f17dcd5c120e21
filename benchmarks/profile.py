#!/usr/bin/env python3
"""Profile the trio_sse benchmark server under a fan-out with py-spy.

Starts the trio_sse server (pinned to CPU 0), opens the connections with the
load client (CPU 1), and attaches ``py-spy record`` only while the events
flow, so connection set-up is not in the profile. The publisher is the one of
``run.py``: a checkpoint before every event (``--no-checkpoint`` for the old
burst), ``--publishers`` tasks, ``--rate`` events/s (0: as fast as it goes).

Writes the collapsed stacks to ``benchmarks/results/profile-<name>.txt``
(speedscope and flamegraph.pl read this format) and prints where the server's
CPU goes: each sample is charged to the innermost frame's cost (the socket
send, Hypercorn's send lock, cancel scopes, h11, the scheduler, trio_sse, ...)
and, with the server's CPU time and the deliveries of the window, turned into
microseconds per event delivered to one subscriber.

    python benchmarks/profile.py [--conns 1000 --events 1000 --size 64]
    python benchmarks/profile.py --rate 100 --events 500 --size 256 --name paced
"""

from __future__ import annotations

import argparse
import collections
import functools
import json
import linecache
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run

# Cancel scopes and checkpoints live in trio/_core/_run.py with the scheduler:
# they are told apart by function name.
CANCEL_FUNCS = {
    "__enter__",
    "__exit__",
    "_close",
    "_exit",
    "shield",
    "_might_change_registered_deadline",
    "recalculate",
    "effectively_cancelled",
    "_mark_abandoned",
    "_add_child",
    "_remove_child",
    "__init__",
    "cancel_shielded_checkpoint",
    "checkpoint",
    "checkpoint_if_cancelled",
    "_attempt_delivery_of_any_pending_cancel",
    "_activate_cancel_status",
    "_cancel_status",
}

# (cost, test on the innermost frame's function and file), first match wins;
# "syscall", "await" and "cancel" are tests on the frame's source line or name.
COSTS = (
    ("send() system call (kernel: loopback TCP)", ("syscall",)),
    ("await sites: calling, suspending, resuming coroutines", ("await",)),
    (
        "Hypercorn's send lock (trio.Lock)",
        ("trio/_sync.py", "trio/_core/_parking_lot.py"),
    ),
    ("cancel scopes and checkpoints (trio)", ("cancel",)),
    (
        "trio socket wrappers (send_all, _try_sync, memoryview)",
        ("trio/_highlevel_socket.py", "trio/_socket.py"),
    ),
    ("h11 framing", ("h11/",)),
    ("Hypercorn send path (app_send, stream_send, protocol_send)", ("send",)),
    ("Hypercorn, other (reads, timers, task groups)", ("hypercorn/",)),
    (
        "trio scheduler (run loop, reschedule, traps)",
        (
            "trio/_core/_run.py",
            "trio/_core/_traps.py",
            "trio/_core/_ki.py",
            "trio/_core/_instrumentation.py",
            "trio/_core/_local.py",
            "trio/_core/_generated_run.py",
            "trio/_core/_wakeup_socketpair.py",
            "outcome/",
        ),
    ),
    ("trio I/O wait (epoll)", ("trio/_core/_io_epoll.py",)),
    ("trio memory channels", ("trio/_channel.py",)),
    (
        "trio_sse broadcaster (send fan-out, stream receive)",
        ("trio_sse/_broadcast.py", "trio_sse/_backend.py"),
    ),
    ("trio_sse response (driver, drain, encode)", ("trio_sse/",)),
    ("benchmark publisher", ("trio_sse_app.py", "_common.py")),
)
SEND_PATH = ("app_send", "stream_send", "protocol_send", "_send_h11_event")


def split(frame: str) -> tuple[str, str]:
    """py-spy's ``func (path:line)`` as (func, path)."""
    fn, _, loc = frame.partition(" (")
    return fn.rsplit(".", 1)[-1], loc.rstrip(")").rsplit(":", 1)[0]


@functools.cache
def source_line(frame: str) -> str:
    """The source text of a py-spy frame, looked up where the server's code is."""
    loc = frame.partition(" (")[2].rstrip(")")
    path, _, line = loc.rpartition(":")
    if not line.isdigit():
        return ""
    roots = [run.REPO, run.HERE, run.HERE / "peers"]
    roots += sorted(run.ENV.glob("lib/python3*/site-packages"))
    roots += [Path(p) for p in sys.path if p.endswith("lib/python3.11")]
    for root in roots:
        if (root / path).is_file():
            return linecache.getline(str(root / path), int(line)).strip()
    return ""


GC_FRAMES = ("gc_collect_main", "collect_generations", "gc_collect_with_callback")


def python_frames(frames: list[str]) -> list[str]:
    """The stack without ``--native``'s C frames (kept when all are C)."""
    py = [f for f in frames if ".py:" in f or "<attrs " in f]
    return py or frames


def cost(frames: list[str]) -> str:
    if any(g in f for f in frames for g in GC_FRAMES):
        return "CPython garbage collector (gc, from --native stacks)"
    frames = python_frames(frames)
    fn, path = split(frames[-1])
    text = source_line(frames[-1])
    in_send = any(split(f)[0] in SEND_PATH for f in frames)
    for name, needles in COSTS:
        for needle in needles:
            if needle == "syscall":
                if fn == "_nonblocking_helper" and text.startswith("return fn("):
                    return name
            elif needle == "await":
                if text.startswith(("async with", "async for")) or "await " in text:
                    return name
            elif needle == "cancel":
                if path.endswith("trio/_core/_run.py") and fn in CANCEL_FUNCS:
                    return name
            elif needle == "send":
                if "hypercorn/" in path and in_send:
                    return name
            elif needle in path:
                return name
    return "other (stdlib, ...)"


def summarise(path: Path, top: int, cpu_s: float | None, delivered: int) -> str:
    """Where the samples go; with the server's CPU time, in µs per delivery."""
    by_cost: collections.Counter[str] = collections.Counter()
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
        by_cost[cost(frames)] += count
        frames = python_frames(frames)
        self_by_fn[frames[-1]] += count
        seen = set()
        for frame in frames:
            fn, loc = split(frame)
            key = f"{frame.split(' (', 1)[0]} [{loc}]"
            if key not in seen:
                seen.add(key)
                incl[key] += count
    if not total:
        return "no samples\n"
    us = None
    if cpu_s and delivered:
        us = cpu_s / delivered * 1e6
    head = f"{total} samples (CPU only, idle excluded)"
    if us is not None:
        head += (
            f"; server CPU {cpu_s:.2f} s for {delivered:,} deliveries: "
            f"{us:.2f} µs per event per subscriber"
        )
    out = [head, "", "| cost (innermost frame) | share | µs per delivery |"]
    out.append("|---|---:|---:|")
    for name, n in by_cost.most_common():
        per = "–" if us is None else f"{us * n / total:.2f}"
        out.append(f"| {name} | {100 * n / total:.1f} % | {per} |")
    out.append(
        "\ninclusive (function on the stack; partial: py-spy does not always "
        "see the outer frames of a resumed coroutine):"
    )
    for fn, n in incl.most_common(top + 15):
        out.append(f"  {100 * n / total:5.1f} %  {fn}")
    out.append("\nhottest lines (innermost frame):")
    for frame, n in self_by_fn.most_common(top):
        out.append(f"  {100 * n / total:5.1f} %  {frame}  {source_line(frame)[:60]}")
    return "\n".join(out) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conns", type=int, default=1000)
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--rate", type=float, default=0.0)
    parser.add_argument("--publishers", type=int, default=1)
    parser.add_argument(
        "--no-checkpoint",
        action="store_true",
        help="the old burst: a publisher that never yields between events",
    )
    parser.add_argument("--variant", default="response", help="response or cast")
    parser.add_argument(
        "--trio-sse-tree", type=Path, help="import trio_sse from this checkout"
    )
    parser.add_argument("--duration", type=int, default=15)
    parser.add_argument("--nice", type=int, help="as run.py --nice")
    parser.add_argument("--gc-threshold", metavar="G0,G1,G2", help="as run.py's")
    parser.add_argument(
        "--native",
        action="store_true",
        help="py-spy --native: C frames too, which shows the garbage collector",
    )
    parser.add_argument("--name", default="fanout-1k")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument(
        "--report", action="store_true", help="only summarise the saved profile"
    )
    opts = parser.parse_args()

    run.ensure_env(False)
    if opts.nice is not None:
        os.environ["SSE_BENCH_NICE"] = str(opts.nice)
    if opts.gc_threshold:
        os.environ["SSE_BENCH_GC_THRESHOLD"] = opts.gc_threshold
    run.build_loadgen()
    run.RESULTS.mkdir(exist_ok=True)
    out = run.RESULTS / f"profile-{opts.name}.txt"
    meta = run.RESULTS / f"profile-{opts.name}.json"
    if not opts.report:
        profile(opts, out, meta)
    info = json.loads(meta.read_text())
    print("load client:", json.dumps(info["client"])[:300])
    summary = summarise(out, opts.top, info["server_cpu_s"], info["delivered"])
    (run.RESULTS / f"profile-{opts.name}-summary.txt").write_text(summary)
    print(summary)
    print(f"stacks: {out.relative_to(run.REPO)} (open in speedscope.app)")


def profile(opts: argparse.Namespace, out: Path, meta: Path) -> None:
    """Run the scenario under py-spy; save the stacks and the window's figures."""
    trees = [opts.trio_sse_tree.resolve()] if opts.trio_sse_tree else []
    # The last one: from --trio-sse-tree when given, else from this checkout.
    peer = run.trio_sse_peers([opts.variant], trees)[-1]
    sc = run.Scenario(
        opts.name,
        "stream",
        (),
        conns=opts.conns,
        events=opts.events,
        size=opts.size,
        rate=opts.rate,
        publishers=opts.publishers,
        checkpoint=not opts.no_checkpoint,
    )
    log = run.RESULTS / "profile-server.log"
    pyspy = run.ENV / "bin" / "py-spy"
    buffer = max(1024, opts.events)
    with (
        run.running_server(peer, buffer, 15.0, log) as srv,
        (run.RESULTS / "profile-py-spy.log").open("ab") as spy_log,
    ):
        cmd = [
            *run.pinned(run.CLIENT_CPU),
            str(run.LOADGEN),
            "--port",
            str(srv.port),
            "--conns",
            str(opts.conns),
            "--events",
            str(opts.events),
            "--publish",
            sc.query(),
            "--timeout",
            str(opts.duration),
            "--stall",
            "5",
        ]
        client = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, text=True, start_new_session=True
        )
        run.prioritise(client.pid)
        spy = None
        result = ""
        cpu0 = cpu1 = 0.0
        try:
            assert client.stdout is not None
            for line in client.stdout:
                if line.startswith("#publish"):
                    cpu0 = run.proc_cpu_s(srv.proc.pid)
                    spy = subprocess.Popen(
                        [
                            "taskset",
                            "-c",
                            run.CLIENT_CPU,
                            str(pyspy),
                            "record",
                            "--pid",
                            str(srv.proc.pid),
                            "--rate",
                            "250",
                            "--format",
                            "raw",
                            "--output",
                            str(out),
                            "--duration",
                            str(opts.duration),
                            # --native must pause the process to unwind it.
                            *(["--native"] if opts.native else ["--nonblocking"]),
                        ],
                        stdout=spy_log,
                        stderr=spy_log,
                        start_new_session=True,
                    )
                elif line.strip():
                    result = line
                    cpu1 = run.proc_cpu_s(srv.proc.pid)
            client.wait(opts.duration + 60)
        finally:
            run.stop(client)
            if spy is not None:
                # py-spy writes its output when its duration is over or the
                # traced process ends; let it finish its window first.
                try:
                    spy.wait(opts.duration + 30)
                except subprocess.TimeoutExpired:
                    run.stop(spy)
    record = json.loads(result) if result.strip() else {}
    meta.write_text(
        json.dumps(
            {
                "client": {
                    k: record.get(k)
                    for k in ("events_per_s", "delivered", "expected", "latency_ms")
                },
                "delivered": record.get("delivered", 0),
                "server_cpu_s": round(cpu1 - cpu0, 3) if cpu1 else None,
                "query": sc.query(),
                "variant": opts.variant,
                "gc_threshold": opts.gc_threshold,
                "trio_sse_from": str(peer.tree),
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
