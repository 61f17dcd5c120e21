#!/usr/bin/env python3
"""Connection flood: a trio_sse server at its file descriptor limit.

Starts a real server process (``trio_sse.run``, the ``bc.subscribe_response``
route, a tick event every ``--tick`` seconds) with ``RLIMIT_NOFILE`` lowered
to ``--fd-limit`` and ``SseConfig(max_streams=--max-streams)``, opens a few
watcher streams, then floods it from ``--clients`` attacker processes, each
opening ``--connections`` raw TCP connections (from its own loopback
address; all at once, or ``--rate`` a second) that send a stream request,
after ``--silent`` that connect and send nothing. The attackers hold every
connection until all of them are settled (answered, closed by the server,
or not answered within ``--answer-timeout``), then close them all.
Meanwhile and afterwards it measures::

    connections attempted / connected / admitted / refused (200 + retry:) /
        not answered, and the time each waited for its answer
    a new client during the flood and after it: time to its answer
    the watchers: ticks received during the flood, longest gap
    the server's open descriptors (/proc): before, peak, after
    the server's log lines: the fd-limit line, refusals, tracebacks

The incident it reproduces, at full scale (needs ``ulimit -n`` of 20,000)::

    python benchmarks/flood.py --clients 2 --connections 11000 \\
        --fd-limit 20000 --max-streams 15000 --tick 30 --rate 80 \\
        --answer-timeout 120

``--max-streams 0`` runs without a cap; ``--tree DIR`` serves with the
trio_sse of another checkout (before and after); ``--json`` prints the
figures as JSON (``tests/test_flood.py`` runs a small flood this way).
Linux only.
"""

from __future__ import annotations

import argparse
import errno
import itertools
import json
import logging
import math
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from functools import partial
from pathlib import Path
from typing import Any

import trio

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
REQUEST = b"GET /events HTTP/1.1\r\nhost: flood\r\naccept: text/event-stream\r\n\r\n"
#: Linux's IP_BIND_ADDRESS_NO_PORT: bind a source address, pick the port at
#: connect() (so ports are shared across destinations, not reserved at bind).
BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)
#: How many descriptors a process needs beyond its connections.
FD_MARGIN = 256


def raise_fd_limit(wanted: int) -> int:
    """Raise this process's soft ``RLIMIT_NOFILE`` to *wanted* (up to the hard
    limit); return the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY:
        wanted = min(wanted, hard)
    if wanted > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# -- the server ----------------------------------------------------------------


def run_server(args: argparse.Namespace) -> None:
    """The server process: lower the fd limit, tick, serve until SIGTERM."""
    import hypercorn.config

    import trio_sse

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (args.fd_limit, hard))
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    config = trio_sse.SseConfig(
        max_streams=args.max_streams or None, keep_alive=None, overload_retry=5
    )
    bc: trio_sse.Broadcaster[str, trio_sse.Event] = trio_sse.Broadcaster(config=config)
    subscribe_response = getattr(bc, "subscribe_response", None)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            # The ticker lives as long as the application.
            async with trio.open_nursery() as nursery:
                await receive()
                nursery.start_soon(tick)
                nursery.start_soon(stop_with_the_orchestrator)
                await send({"type": "lifespan.startup.complete"})
                await receive()
                nursery.cancel_scope.cancel()
            await send({"type": "lifespan.shutdown.complete"})
        elif scope["type"] == "http":
            if subscribe_response is None:  # a tree from before it existed
                response = bc.response(bc.subscribe("ticks"))
            else:
                response = subscribe_response("ticks")
            await response(scope, receive, send)

    async def stop_with_the_orchestrator() -> None:
        # stdin is a pipe from the orchestrator: its end means it is gone.
        async with trio.lowlevel.FdStream(os.dup(sys.stdin.fileno())) as stdin:
            while await stdin.receive_some():
                pass
        signal.raise_signal(signal.SIGTERM)  # a graceful shutdown

    async def tick() -> None:
        n = 0
        while True:
            await trio.sleep(args.tick)
            n += 1
            bc.send("ticks", trio_sse.Event(str(n)))

    hypercorn_config = hypercorn.config.Config()
    hypercorn_config.errorlog = logging.getLogger("hypercorn.error")
    hypercorn_config.accesslog = None
    # How long a connection may stay without a request (a silent one).
    hypercorn_config.keep_alive_timeout = args.keep_alive_timeout
    trio_sse.run(
        app,
        "127.0.0.1",
        0,
        config=config,
        hypercorn_config=hypercorn_config,
        graceful_timeout=5,
    )


# -- client connections --------------------------------------------------------


class Connection:
    """One raw HTTP/1.1 connection: what it got and when."""

    __slots__ = ("answered", "closed", "data", "events", "kind", "started")

    def __init__(self) -> None:
        self.started = time.monotonic()
        #: Seconds from the first connect() to the response head.
        self.answered: float | None = None
        #: Seconds from the first connect() to the server's close.
        self.closed: float | None = None
        #: ``admitted`` (the stream's events flow), ``refused`` (200, a
        #: ``retry:`` and the end), ``other`` (any other answer), ``silent``
        #: (sent nothing), ``connect_error:<errno>``, ``connect_timeout``,
        #: ``no_answer``, ``reset``.
        self.kind = "no_answer"
        #: Events received (``data:`` lines).
        self.events = 0
        self.data = bytearray()

    def digest(self, data: bytes) -> None:
        """Take bytes the server sent; classify the answer once it is clear."""
        if self.kind == "admitted":
            self.events += data.count(b"data: ")
            return
        self.data += data
        head, sep, body = bytes(self.data).partition(b"\r\n\r\n")
        if not sep:
            return
        if self.answered is None:
            self.answered = time.monotonic() - self.started
        self.events = body.count(b"data: ")
        if not head.startswith(b"HTTP/1.1 200"):
            self.kind = "other"
        elif b"retry: " in body and body.endswith(b"\r\n0\r\n\r\n"):
            self.kind = "refused" if not self.events else "other"
        elif self.events:
            self.kind = "admitted"
            self.data = bytearray()  # a stream's bytes need not be kept


class Countdown:
    """A :class:`trio.Event` set once :meth:`done` was called *count* times."""

    def __init__(self, count: int) -> None:
        self.left = count
        self.event = trio.Event()
        if not count:
            self.event.set()

    def done(self) -> None:
        self.left -= 1
        if not self.left:
            self.event.set()


def errno_name(error: OSError) -> str:
    return errno.errorcode.get(error.errno or 0, str(error.errno))


def split_url(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


async def open_connection(
    source: str, address: tuple[str, int], deadline: float
) -> trio.SocketStream:
    """Connect from *source* (any free port) to *address* by *deadline*."""
    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.IPPROTO_IP, BIND_ADDRESS_NO_PORT, 1)
        await sock.bind((source, 0))
        with trio.fail_at(deadline):
            await sock.connect(address)
    except BaseException:
        sock.close()
        raise
    return trio.SocketStream(sock)


async def read_some(stream: trio.SocketStream, conn: Connection) -> bool:
    """Read once into *conn*; ``False`` at the server's close (or a reset)."""
    try:
        data = await stream.receive_some(65536)
    except trio.BrokenResourceError:
        if conn.kind == "no_answer":
            conn.kind = "reset"
        data = b""
    if not data:
        if conn.closed is None:
            conn.closed = time.monotonic() - conn.started
        return False
    conn.digest(data)
    return True


async def run_connection(
    conn: Connection,
    source: str,
    address: tuple[str, int],
    *,
    silent: bool,
    deadline: float,
    settled: Countdown,
    release: trio.Event,
    connected: Countdown | None = None,
) -> None:
    """Connect, ask for the stream (unless *silent*) and wait for the answer
    until *deadline*; then hold the connection, reading, until *release*.
    *connected* counts down once connect() is over, whatever its outcome."""
    conn.started = time.monotonic()
    try:
        stream = await open_connection(source, address, deadline)
    except trio.TooSlowError:
        conn.kind = "connect_timeout"
    except OSError as error:
        conn.kind = f"connect_error:{errno_name(error)}"
    if connected is not None:
        connected.done()
    if conn.kind != "no_answer":
        settled.done()
        return
    async with stream:
        still_open = True
        if silent:
            conn.kind = "silent"
        else:
            await stream.send_all(REQUEST)
        with trio.move_on_at(deadline):
            # Settled: admitted, or closed by the server (after a refusal, or
            # a silent connection), or out of time.
            while still_open and conn.kind in ("no_answer", "silent", "refused"):
                still_open = await read_some(stream, conn)
        settled.done()
        async with trio.open_nursery() as nursery:
            if still_open:
                nursery.start_soon(read_to_end, stream, conn)
            await release.wait()
            nursery.cancel_scope.cancel()


async def read_to_end(stream: trio.SocketStream, conn: Connection) -> None:
    while await read_some(stream, conn):
        pass


def summary(conns: list[Connection]) -> dict[str, Any]:
    """What a group of connections got."""
    kinds = Counter(c.kind for c in conns)
    answered = sorted(c.answered for c in conns if c.answered is not None)

    def closed(kind: str) -> int:
        return sum(1 for c in conns if c.kind == kind and c.closed is not None)

    return {
        "kinds": dict(sorted(kinds.items())),
        "answered": len(answered),
        "answer_p50": percentile(answered, 50),
        "answer_p99": percentile(answered, 99),
        "answer_max": answered[-1] if answered else None,
        "refused_closed_by_server": closed("refused"),
        "silent_closed_by_server": closed("silent"),
        "admitted_events_min": min(
            (c.events for c in conns if c.kind == "admitted"), default=None
        ),
    }


def percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    return round(values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))], 3)


# -- an attacker process -------------------------------------------------------


def run_attacker(args: argparse.Namespace) -> None:
    """An attacker process: flood; print ``settled``; on a line of stdin,
    close everything and print ``released``."""
    needed = args.connections + args.silent
    soft = raise_fd_limit(needed + FD_MARGIN)
    if soft < needed + 16:
        raise SystemExit(f"ulimit -n is {soft}: too low for {needed} connections")
    trio.run(attack, args)


async def attack(args: argparse.Namespace) -> None:
    address = split_url(args.url)
    total = args.connections + args.silent
    deadline = trio.current_time() + args.answer_timeout
    settled = Countdown(total)
    release = trio.Event()
    conns = [Connection() for _ in range(total)]
    stdin = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
    async with stdin, trio.open_nursery() as nursery:

        async def release_on_stdin() -> None:
            # A line, or the end: the orchestrator is gone.
            await stdin.receive_some()
            release.set()
            if not settled.event.is_set():
                nursery.cancel_scope.cancel()

        nursery.start_soon(release_on_stdin)
        # The silent connections first (they fill the server's descriptor
        # table; the server accepts in the order the handshakes completed),
        # then the stream requests.
        silent = Countdown(args.silent)
        start = trio.current_time()
        for i, conn in enumerate(conns):
            if i == args.silent:
                await silent.event.wait()
            if args.rate:
                await trio.sleep_until(start + i / args.rate)
                # Each connection has the whole answer timeout.
                deadline = trio.current_time() + args.answer_timeout
            nursery.start_soon(
                partial(
                    run_connection,
                    conn,
                    args.source,
                    address,
                    silent=i < args.silent,
                    deadline=deadline,
                    settled=settled,
                    release=release,
                    connected=silent if i < args.silent else None,
                )
            )
        await settled.event.wait()
        print(json.dumps({"settled": summary(conns)}), flush=True)
        await release.wait()
    print(json.dumps({"released": summary(conns)}), flush=True)


# -- the orchestrator ----------------------------------------------------------


class Lines:
    """The lines a process writes to a pipe, as they come."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._changed = trio.Event()

    async def pump(self, stream: trio.abc.ReceiveStream) -> None:
        buffer = b""
        async for chunk in stream:
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            self.lines.extend(line.decode(errors="replace") for line in lines)
            self._changed.set()
            self._changed = trio.Event()
        if buffer:
            self.lines.append(buffer.decode(errors="replace"))
        self._changed.set()

    async def wait_for(self, pattern: str, start: int = 0) -> re.Match[str]:
        """The first match of *pattern* in a line (from line *start* on)."""
        while True:
            for line in self.lines[start:]:
                if found := re.search(pattern, line):
                    return found
            changed = self._changed
            if changed.is_set():
                raise EOFError(f"no line matches {pattern!r}")
            await changed.wait()


def open_fds(pid: int) -> int:
    """How many descriptors process *pid* has open."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def environment(tree: str | None = None) -> dict[str, str]:
    """The environment of a process that imports trio_sse from *tree*
    (default: this checkout)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [tree or str(REPO), env.get("PYTHONPATH")])
    )
    return env


async def probe(url: str, limit: float) -> dict[str, Any]:
    """A new client asks for the stream: what it gets, and how soon."""
    conn = Connection()
    deadline = trio.current_time() + limit
    try:
        stream = await open_connection("127.0.0.1", split_url(url), deadline)
        async with stream:
            await stream.send_all(REQUEST)
            with trio.move_on_at(deadline):
                while conn.kind == "no_answer" and await read_some(stream, conn):
                    pass
    except trio.TooSlowError:
        conn.kind = "connect_timeout"
    return {"kind": conn.kind, "answered_after": rounded(conn.answered)}


def rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


class Watcher:
    """A stream opened before the flood: when its ticks arrive."""

    def __init__(self) -> None:
        self.ticks: list[float] = []
        self.admitted = trio.Event()

    async def run(self, url: str) -> None:
        conn = Connection()
        deadline = trio.current_time() + 10
        stream = await open_connection("127.0.0.1", split_url(url), deadline)
        async with stream:
            await stream.send_all(REQUEST)
            seen = 0
            while await read_some(stream, conn):
                if conn.kind == "admitted":
                    self.admitted.set()
                    self.ticks.extend([time.monotonic()] * (conn.events - seen))
                    seen = conn.events
        raise RuntimeError(f"a watcher's stream ended: {conn.kind}")

    def gaps(self, start: float, end: float) -> tuple[int, float]:
        """Ticks between *start* and *end*, and the longest time without one."""
        times = [start, *(t for t in self.ticks if start <= t <= end), end]
        return len(times) - 2, max(b - a for a, b in itertools.pairwise(times))


async def orchestrate(args: argparse.Namespace) -> dict[str, Any]:
    """Run the whole flood; return its figures."""
    figures: dict[str, Any] = {
        "clients": args.clients,
        "connections_per_client": args.connections,
        "silent_per_client": args.silent,
        "attempted": args.clients * (args.connections + args.silent),
        "fd_limit": args.fd_limit,
        "max_streams": args.max_streams or None,
        "watchers": args.watchers,
        "tick": args.tick,
        "rate_per_client": args.rate or None,
        "keep_alive_timeout": args.keep_alive_timeout,
        "tree": args.tree,
    }
    server_log = Lines()
    command = [
        sys.executable, __file__, "--role", "server",
        "--fd-limit", str(args.fd_limit),
        "--max-streams", str(args.max_streams),
        "--tick", str(args.tick),
        "--keep-alive-timeout", str(args.keep_alive_timeout),
    ]  # fmt: skip
    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            partial(
                trio.run_process,
                command,
                stdin=subprocess.PIPE,  # closed when this process ends
                stderr=subprocess.PIPE,
                env=environment(args.tree),
                check=False,
            )
        )
        nursery.start_soon(server_log.pump, server.stderr)
        with trio.fail_after(30):
            url = (await server_log.wait_for(r"Running on (http://\S+)"))[1]
        figures["fds_before"] = open_fds(server.pid)
        try:
            with trio.fail_after(args.time_limit or math.inf):
                await flood(args, url, server.pid, figures)
        except Exception as error:  # report what was measured, and why it stopped
            figures["error"] = repr(error)
        finally:
            server.send_signal(signal.SIGTERM)
            stopping = time.monotonic()
        with trio.move_on_after(300):
            figures["server_exit_code"] = await server.wait()
            figures["server_shutdown_seconds"] = round(time.monotonic() - stopping, 3)
        if server.returncode is None:
            figures["server_exit_code"] = "still running 300 s after SIGTERM: killed"
            server.kill()
    lines = server_log.lines
    figures["log"] = {
        "lines": len(lines),
        "fd_limit": sum("cannot accept connections" in line for line in lines),
        "fd_limit_over": sum("accepting connections again" in line for line in lines),
        "refusals": sum("refused" in line for line in lines),
        "tracebacks": sum(line.startswith("Traceback") for line in lines),
    }
    if args.log:
        await trio.Path(args.log).write_text("\n".join(lines) + "\n")
    return figures


async def flood(
    args: argparse.Namespace, url: str, pid: int, figures: dict[str, Any]
) -> None:
    watchers = [Watcher() for _ in range(args.watchers)]
    async with trio.open_nursery() as nursery:
        for watcher in watchers:
            nursery.start_soon(watcher.run, url)
        # A stream counts as admitted at its first event.
        with trio.fail_after(30 + 2 * args.tick):
            for watcher in watchers:
                await watcher.admitted.wait()
        # Descriptors with the watchers' streams open: the floor to return to.
        figures["fds_watching"] = floor = open_fds(pid)
        peak = [floor]

        async def sample() -> None:
            # A measurement, not a wait: how many descriptors, 20 times a second.
            while True:
                peak[0] = max(peak[0], open_fds(pid))
                await trio.sleep(0.05)

        nursery.start_soon(sample)
        start = time.monotonic()
        attackers = []
        async with trio.open_nursery() as attacking:
            for i in range(args.clients):
                command = [
                    sys.executable, __file__, "--role", "attacker",
                    "--url", url, "--source", f"127.0.0.{2 + i}",
                    "--connections", str(args.connections),
                    "--silent", str(args.silent),
                    "--answer-timeout", str(args.answer_timeout),
                    "--rate", str(args.rate),
                ]  # fmt: skip
                process = await attacking.start(
                    partial(
                        trio.run_process,
                        command,
                        stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE,
                        env=environment(),
                    )
                )
                out = Lines()
                attacking.start_soon(out.pump, process.stdout)
                attackers.append((process, out))
            during: dict[str, Any] = {}

            async def probe_during() -> None:
                await trio.sleep(args.probe_delay)
                during["fds_at_start"] = open_fds(pid)
                during.update(await probe(url, args.answer_timeout))

            attacking.start_soon(probe_during)
            reports = []
            pacing = (args.connections + args.silent) / args.rate if args.rate else 0
            with trio.fail_after(pacing + args.answer_timeout + 60):
                for _, out in attackers:
                    found = await out.wait_for(r'^\{"settled"')
                    reports.append(json.loads(found.string)["settled"])
            settled = time.monotonic()
            figures["flood_seconds"] = round(settled - start, 3)
            figures["fds_peak"] = peak[0]
            figures["attackers"] = reports
            figures["totals"] = totals(reports)
            gaps = [w.gaps(start, settled) for w in watchers]
            figures["watchers_during"] = {
                "ticks_min": min((ticks for ticks, _ in gaps), default=None),
                "longest_gap": rounded(max((gap for _, gap in gaps), default=None)),
            }
            for process, _ in attackers:
                await process.stdin.send_all(b"release\n")
        figures["probe_during"] = during
        figures["admitted_events_min"] = min(
            (
                report["admitted_events_min"]
                for _, out in attackers
                for report in [json.loads(out.lines[-1])["released"]]
                if report["admitted_events_min"] is not None
            ),
            default=None,
        )
        # The attackers closed everything: back to the floor.
        released = time.monotonic()
        with trio.move_on_after(60):
            while open_fds(pid) > floor:  # noqa: ASYNC110 - measuring, not waiting
                await trio.sleep(0.05)
        figures["fds_after"] = open_fds(pid)
        figures["fds_back_after"] = round(time.monotonic() - released, 3)
        figures["probe_after"] = await probe(url, args.answer_timeout)
        # The watchers' next events, after the flood.
        after = time.monotonic()
        with trio.move_on_after(2 * args.tick + 10):
            while not all(w.gaps(after, time.monotonic())[0] for w in watchers):  # noqa: ASYNC110
                await trio.sleep(0.05)
        figures["watchers_after"] = {
            "ticks_min": min(
                (w.gaps(after, time.monotonic())[0] for w in watchers), default=None
            )
        }
        nursery.cancel_scope.cancel()


def totals(reports: list[dict[str, Any]]) -> dict[str, int]:
    total: Counter[str] = Counter()
    for report in reports:
        total.update(report["kinds"])
        total["refused_closed_by_server"] += report["refused_closed_by_server"]
        total["silent_closed_by_server"] += report["silent_closed_by_server"]
    return dict(sorted(total.items()))


def show(figures: dict[str, Any]) -> None:
    """Print the figures for a reader."""
    print(
        f"flood: {figures['clients']} x ({figures['connections_per_client']:,} requests"
        f" + {figures['silent_per_client']:,} silent) connections,"
        f" fd limit {figures['fd_limit']:,}, max_streams {figures['max_streams']},"
        f" {figures['watchers']} watchers, a tick every {figures['tick']} s"
    )
    if "error" in figures:
        print(f"  stopped early: {figures['error']}")
    print(f"  attempted        {figures['attempted']:,}")
    for kind, count in figures.get("totals", {}).items():
        print(f"  {kind:<28} {count:,}")
    for i, report in enumerate(figures.get("attackers", ())):
        print(
            f"  attacker {i}: answered {report['answered']:,}, answer p50"
            f" {report['answer_p50']} s, p99 {report['answer_p99']} s,"
            f" max {report['answer_max']} s"
        )
    for key, label in [
        ("flood_seconds", "flood settled after (s)"),
        ("fds_before", "server fds before"),
        ("fds_watching", "server fds with the watchers"),
        ("fds_peak", "server fds at the peak"),
        ("fds_after", "server fds after"),
        ("fds_back_after", "  back after release (s)"),
        ("watchers_during", "watchers during the flood"),
        ("watchers_after", "watchers after the flood"),
        ("admitted_events_min", "fewest events on an admitted flood stream"),
        ("probe_during", "a new client during the flood"),
        ("probe_after", "a new client after it"),
        ("log", "server log lines"),
        ("server_exit_code", "server exit code"),
        ("server_shutdown_seconds", "server shutdown after SIGTERM (s)"),
    ]:
        if key in figures:
            print(f"  {label:<42} {figures[key]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--role", choices=["orchestrator", "server", "attacker"])
    parser.add_argument("--clients", type=int, default=2, help="attacker processes")
    parser.add_argument(
        "--connections", type=int, default=11_000, help="stream requests per client"
    )
    parser.add_argument(
        "--silent", type=int, default=0, help="connections per client sending nothing"
    )
    parser.add_argument("--fd-limit", type=int, default=20_000)
    parser.add_argument(
        "--max-streams", type=int, default=15_000, help="0: no max_streams"
    )
    parser.add_argument(
        "--watchers", type=int, default=10, help="streams opened before the flood"
    )
    parser.add_argument("--tick", type=float, default=1.0, help="seconds per event")
    parser.add_argument(
        "--keep-alive-timeout",
        type=float,
        default=5.0,
        help="the server's Hypercorn keep_alive_timeout (closes silent connections)",
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=0,
        help="connections each client opens per second (0: all at once)",
    )
    parser.add_argument("--answer-timeout", type=float, default=60.0)
    parser.add_argument(
        "--time-limit",
        type=float,
        help="stop the flood after this many seconds and report what was measured",
    )
    parser.add_argument(
        "--probe-delay", type=float, default=2.0, help="when the new client comes"
    )
    parser.add_argument(
        "--tree", help="serve with the trio_sse of this source tree (default: here)"
    )
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--log", help="write the server's log to this file")
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--source", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "server":
        run_server(args)
    elif args.role == "attacker":
        run_attacker(args)
    else:
        if not Path("/proc/self/fd").is_dir():
            raise SystemExit("flood.py needs Linux (/proc)")
        figures = trio.run(orchestrate, args)
        if args.json:
            print(json.dumps(figures))
        else:
            show(figures)


if __name__ == "__main__":
    main()
