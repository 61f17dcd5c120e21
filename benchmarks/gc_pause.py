"""Garbage-collector pauses of a trio_sse server holding many idle streams.

Starts a server subprocess (``trio_sse.serve``, one ``Broadcaster``,
``bc.response(bc.subscribe(key))`` per connection, keys taken in turn from
``--keys``), then opens idle SSE connections with the C load client
``loadgen.c`` in stages (10,000 then 16,000 by default), holding each stage
``--hold`` seconds while the server publishes a trickle of events (``--rate``
per second, each to one key) and sends its keep-alives (every 15 s).

Inside the server, for each stage, over the hold (and separately over the
connecting before it):

- the longest garbage collection of each generation (``gc.callbacks``);
- the event loop's longest stall: a task sleeping 10 ms records how late it
  wakes;
- the resident memory, and the objects the collector tracks (those
  ``gc.freeze()`` moved out of its way counted apart), per open stream.

Prints a table and one JSON object. trio_sse is imported from this checkout,
or from the directory given with ``--tree``, so that two revisions compare
with the same command::

    python benchmarks/gc_pause.py                    # 10,000 and 16,000 streams
    python benchmarks/gc_pause.py --tree ../old      # the same, another checkout
    python benchmarks/gc_pause.py --gc-freeze always # serve(gc_freeze="always")
    python benchmarks/gc_pause.py --stages 2000 --hold 5 --types

The server runs pinned to CPU 0 and the load client to CPU 1 (as
``run.py`` does; ``--nice`` as there), each with its file descriptor limit
raised to the hard limit: 16,000 streams need a hard limit (``ulimit -Hn``)
above 16,100. ``--types`` lists the tracked objects per stream by type.
"""

from __future__ import annotations

import argparse
import collections
import gc
import http.client
import json
import logging
import os
import random
import resource
import subprocess
import sys
import time
import urllib.request
from functools import partial
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from run import (  # noqa: E402  (run.py is this directory's benchmark driver)
    LOADGEN,
    REPO,
    build_loadgen,
    free_port,
    pinned,
    prioritise,
    proc_rss_kib,
    stop,
    wait_port,
)

STALL_TICK = 0.01  # the loop watcher's sleep


# -- the server (a subprocess) ------------------------------------------------------


class Monitor:
    """Collector pauses and event-loop stalls since the last :meth:`reset`."""

    def __init__(self) -> None:
        self.reset()
        self._gc_start = self._gc_cpu_start = 0.0

    def reset(self) -> None:
        self.since = time.monotonic()
        self.gc_count = [0, 0, 0]
        self.gc_max = [0.0, 0.0, 0.0]
        self.gc_cpu_max = [0.0, 0.0, 0.0]
        self.gc_total = [0.0, 0.0, 0.0]
        self.stall_max = 0.0
        self.stalls_over_50ms = 0

    def on_gc(self, phase: str, info: dict[str, int]) -> None:
        # Wall time is the pause clients see; the thread's CPU time is the
        # collector's own work, whatever else the machine runs meanwhile.
        if phase == "start":
            self._gc_start = time.perf_counter()
            self._gc_cpu_start = time.thread_time()
            return
        took = time.perf_counter() - self._gc_start
        cpu = time.thread_time() - self._gc_cpu_start
        generation = info["generation"]
        self.gc_count[generation] += 1
        self.gc_total[generation] += took
        self.gc_max[generation] = max(self.gc_max[generation], took)
        self.gc_cpu_max[generation] = max(self.gc_cpu_max[generation], cpu)

    def on_tick(self, late: float) -> None:
        self.stall_max = max(self.stall_max, late)
        if late > 0.05:
            self.stalls_over_50ms += 1

    def report(self) -> dict[str, Any]:
        return {
            "seconds": round(time.monotonic() - self.since, 1),
            "gc_count": self.gc_count,
            "gc_max_ms": [round(t * 1000, 1) for t in self.gc_max],
            "gc_cpu_max_ms": [round(t * 1000, 1) for t in self.gc_cpu_max],
            "gc_total_ms": [round(t * 1000, 1) for t in self.gc_total],
            "stall_max_ms": round(self.stall_max * 1000, 1),
            "stalls_over_50ms": self.stalls_over_50ms,
        }


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def tracked() -> tuple[int, collections.Counter[str]]:
    """Objects the collector tracks (frozen ones too), and a count by type."""
    objects = gc.get_objects()
    types = collections.Counter(type(o).__qualname__ for o in objects)
    total = len(objects) + gc.get_freeze_count()
    del objects
    return total, types


def serve_main(args: argparse.Namespace) -> None:
    import hypercorn.config
    import trio

    import trio_sse

    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    keys = [f"key{k}" for k in range(args.keys)]
    monitor = Monitor()

    async def main() -> None:
        bc: trio_sse.Broadcaster[str, trio_sse.Event] = trio_sse.Broadcaster()
        turn = 0

        async def reply(send: Any, body: bytes) -> None:
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", b"application/json")],
                }
            )
            await send({"type": "http.response.body", "body": body})

        async def app(scope: Any, receive: Any, send: Any) -> None:
            nonlocal turn
            if scope["type"] != "http":
                return
            if scope["path"] == "/sse":
                turn += 1
                stream = bc.subscribe(keys[turn % len(keys)])
                await bc.response(stream)(scope, receive, send)
                return
            if scope["path"] == "/stats":
                # Counted first, then the window restarts: the walk over
                # every object is not part of the next window.
                report = monitor.report()
                streams = sum(bc.subscriber_count(key) for key in keys)
                total, types = tracked()
                report.update(
                    streams=streams,
                    rss_mib=rss_mib(),
                    tracked=total,
                    frozen=gc.get_freeze_count(),
                    tracked_per_stream=(
                        round((total - base_total) / streams, 1) if streams else None
                    ),
                    types_per_stream=(
                        {
                            name: round(count / streams, 2)
                            for name, count in (types - base_types).most_common(25)
                        }
                        if streams
                        else {}
                    ),
                )
                monitor.reset()
                await reply(send, json.dumps(report).encode())
                return
            if scope["path"] == "/reset":
                report = monitor.report()
                monitor.reset()
                await reply(send, json.dumps(report).encode())
                return
            await reply(send, b"{}")

        async def watch_loop() -> None:
            while True:
                before = trio.current_time()
                await trio.sleep(STALL_TICK)
                monitor.on_tick(trio.current_time() - before - STALL_TICK)

        async def trickle() -> None:
            rng = random.Random(1)
            n = 0
            while True:
                await trio.sleep(1 / args.rate)
                n += 1
                bc.send(rng.choice(keys), trio_sse.Event(f"{n} " + "x" * 64))

        async with trio.open_nursery() as nursery:
            # A stalled server drops a connection whose request it has not
            # read within keep_alive_timeout: the driver's requests come
            # while the server may be stalled for seconds.
            config = hypercorn.config.Config()
            config.keep_alive_timeout = 600
            config.errorlog = logging.getLogger("hypercorn.error")  # as serve()'s
            config.accesslog = None
            serve = partial(trio_sse.serve, hypercorn_config=config)
            if args.gc_freeze:
                freeze = True if args.gc_freeze == "startup" else args.gc_freeze
                serve = partial(serve, gc_freeze=freeze)
            urls = await nursery.start(serve, app, "127.0.0.1", args.port)
            gc.collect()
            base_total, base_types = tracked()
            gc.callbacks.append(monitor.on_gc)  # after serve()'s: its freeze timed too
            try:
                print(json.dumps({"urls": urls, "tracked_at_start": base_total}))
                sys.stdout.flush()
                nursery.start_soon(watch_loop)
                if args.rate > 0:
                    nursery.start_soon(trickle)
                await trio.sleep_forever()
            finally:
                gc.callbacks.remove(monitor.on_gc)

    if args.gc_threshold:
        gc.set_threshold(*args.gc_threshold)
    trio.run(main)


# -- the driver -----------------------------------------------------------------------


def get(port: int, path: str) -> dict[str, Any]:
    # A server stalled for longer than Hypercorn's keep_alive_timeout (5 s)
    # drops a connection whose request it has not read yet: ask again.
    for attempt in range(10):
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{port}{path}", timeout=300
            ) as response:
                return json.loads(response.read())  # type: ignore[no-any-return]
        except (http.client.RemoteDisconnected, ConnectionResetError):
            print(f"{path}: dropped (attempt {attempt + 1}), again", file=sys.stderr)
    raise RuntimeError(f"the server never answered {path}")


def drive(args: argparse.Namespace) -> dict[str, Any]:
    build_loadgen()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    most = max(args.stages)
    if hard < most + 100:
        raise SystemExit(
            f"the hard file descriptor limit ({hard}) is below {most + 100}: "
            "raise it (ulimit -Hn) or open fewer streams"
        )
    tree = (args.tree or REPO).resolve()
    port = free_port()
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(
            [str(tree), *filter(None, [os.environ.get("PYTHONPATH")])]
        ),
        PYTHONDONTWRITEBYTECODE="1",
        PYTHONUNBUFFERED="1",
    )
    server_cmd = [
        *pinned(args.server_cpu),
        sys.executable,
        str(Path(__file__).resolve()),
        "--serve",
        "--port",
        str(port),
        "--keys",
        str(args.keys),
        "--rate",
        str(args.rate),
        *(["--gc-freeze", args.gc_freeze] if args.gc_freeze else []),
        *(
            ["--gc-threshold", ",".join(map(str, args.gc_threshold))]
            if args.gc_threshold
            else []
        ),
    ]
    server = subprocess.Popen(
        server_cmd, env=env, stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    prioritise(server.pid)
    result: dict[str, Any] = {"tree": str(tree), "argv": sys.argv[1:], "stages": []}
    try:
        assert server.stdout is not None
        started = json.loads(server.stdout.readline())
        result["tracked_at_start"] = started["tracked_at_start"]
        wait_port(port, server, 30)  # type: ignore[arg-type]
        result["rss_mib_at_start"] = round(proc_rss_kib(server.pid) / 1024, 1)
        # A last stage holds the connections while the server counts.
        tail = f"{args.stages[-1]}:10"
        stages = ",".join([*(f"{n}:{args.hold}" for n in args.stages), tail])
        loadgen = subprocess.Popen(
            [
                *pinned(args.client_cpu),
                str(LOADGEN),
                "--port",
                str(port),
                "--stages",
                stages,
                "--connect-timeout",
                "600",
            ],
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        prioritise(loadgen.pid)
        try:
            assert loadgen.stdout is not None
            connecting: dict[str, Any] = {}
            get(port, "/reset")
            for line in loadgen.stdout:
                if line.startswith("#connected"):
                    connecting = get(port, "/reset")
                elif line.startswith("#stage"):
                    if len(result["stages"]) == len(args.stages):
                        break  # the tail
                    hold = get(port, "/stats")
                    result["stages"].append({"connecting": connecting, "hold": hold})
                elif line.strip() and not line.startswith("#"):
                    result["stages"][-1]["client"] = json.loads(line)
        finally:
            stop(loadgen)
    finally:
        stop(server)
    return result


def table(result: dict[str, Any]) -> str:
    rows = [
        "| streams | longest GC pause, ms: wall (CPU) | full GCs | longest stall, ms "
        "| stalls > 50 ms | RSS, MiB | tracked objects per stream |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for stage in result["stages"]:
        hold = stage["hold"]
        for phase in ("connecting", "hold"):
            s = stage[phase]
            if phase == "connecting":
                label = f"{hold['streams']:,}, connecting ({s['seconds']:.0f} s)"
                rss = per = ""
            else:
                label = f"{hold['streams']:,}, idle ({s['seconds']:.0f} s)"
                rss = f"{hold['rss_mib']:,.0f}"
                per = f"{hold['tracked_per_stream'] or 0:.1f}"
            pause = f"{max(s['gc_max_ms']):,.0f} ({max(s['gc_cpu_max_ms']):,.0f})"
            rows.append(
                f"| {label} | {pause} | {s['gc_count'][2]} | "
                f"{s['stall_max_ms']:,.0f} | {s['stalls_over_50ms']} | {rss} | {per} |"
            )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--stages",
        default="10000,16000",
        type=lambda v: [int(n) for n in v.split(",")],
        help="open streams of each stage, comma-separated (default 10000,16000)",
    )
    parser.add_argument("--hold", type=float, default=30.0, help="seconds per stage")
    parser.add_argument("--keys", type=int, default=100, help="keys streams spread on")
    parser.add_argument("--rate", type=float, default=10.0, help="events per second")
    parser.add_argument("--tree", type=Path, help="the checkout trio_sse comes from")
    parser.add_argument("--server-cpu", default="0", help="CPU the server runs on")
    parser.add_argument("--client-cpu", default="1", help="CPU the client runs on")
    parser.add_argument(
        "--nice",
        type=int,
        help="run server and client at this nice level (negative: ahead of "
        "other work on a shared host; needs the privilege)",
    )
    parser.add_argument("--types", action="store_true", help="tracked types per stream")
    parser.add_argument(
        "--gc-freeze",
        choices=["startup", "always"],
        help="serve(gc_freeze=True) (startup) or serve(gc_freeze='always')",
    )
    parser.add_argument(
        "--gc-threshold",
        metavar="G0,G1,G2",
        type=lambda v: [int(n) for n in v.split(",")],
        help="gc.set_threshold() in the server (default: Python's)",
    )
    parser.add_argument("--json", type=Path, help="also write the result here")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.nice is not None:
        os.environ["SSE_BENCH_NICE"] = str(args.nice)  # read by run.pinned()
    if args.serve:
        serve_main(args)
        return
    result = drive(args)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    print(table(result))
    if args.types:
        for stage in result["stages"]:
            print(f"\ntracked objects per stream at {stage['hold']['streams']:,}:")
            for name, count in stage["hold"]["types_per_stream"].items():
                print(f"  {count:8.2f}  {name}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
