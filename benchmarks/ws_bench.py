"""Events/s to N WebSocket subscribers vs N SSE subscribers, one trio_sse server.

One server process serves the same Broadcaster key as SSE (``/sse``,
``bc.response``) and as WebSocket (``/ws``, ``bc.websocket``); one client
process per run holds N connections of one kind (SSE read with h11's framing
left in place and events counted by their blank line; WebSocket read with
wsproto). Once all N are subscribed, the server publishes E events of S
bytes with ``bc.send`` (all at once, as ``benchmarks/run.py`` does, or
yielding every ``--yield-every`` events); the figure is
N x E / (time from the start of publishing to the last event received by
the last subscriber). The buffer holds all E events, so nothing is dropped
and every subscriber must receive all of them.

    python benchmarks/ws_bench.py --subscribers 1000 --events 2000 --size 64

Prints one table row per transport and the client's CPU use (the figure
means something only while the client is not the bottleneck).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import trio
import trio.lowlevel

ROOT = Path(__file__).resolve().parent.parent
KEY = "bench"


# -- the server ------------------------------------------------------------------


def make_app(bc: Any) -> Any:
    import trio_sse

    async def respond(send: Any, status: int, body: bytes) -> None:
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": body})

    async def publish(n: int, size: int, every: int) -> None:
        # Yield to the writers once every ``every`` events (0: never).
        for seq in range(n):
            bc.send(KEY, trio_sse.Event(f"{seq} ".ljust(size, "x")))
            if every and seq % every == every - 1:
                await trio.lowlevel.checkpoint()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "websocket" and scope["path"] == "/ws":
            await bc.websocket(bc.subscribe(KEY))(scope, receive, send)
        elif scope["type"] != "http":
            return
        elif scope["path"] == "/sse":
            await bc.response(bc.subscribe(KEY))(scope, receive, send)
        elif scope["path"] == "/stats":
            await respond(send, 200, str(bc.subscriber_count(KEY)).encode())
        elif scope["path"] == "/publish":
            query = dict(
                pair.split("=") for pair in scope["query_string"].decode().split("&")
            )
            await respond(send, 202, b"")
            await publish(int(query["n"]), int(query["size"]), int(query["yield"]))
        else:
            await respond(send, 404, b"")

    return app


async def serve(port: int, buffer: int) -> None:
    import trio_sse

    config = trio_sse.SseConfig(keep_alive=60)
    bc: Any = trio_sse.Broadcaster(buffer=buffer, config=config)
    async with trio.open_nursery() as nursery:
        await nursery.start(trio_sse.serve, make_app(bc), "127.0.0.1", port)


# -- the clients -----------------------------------------------------------------


class Tally:
    def __init__(self, subscribers: int, events: int) -> None:
        self.subscribers = subscribers
        self.events = events
        self.connected = 0
        self.complete = 0
        self.received = 0
        self.last = 0.0
        self.all_connected = trio.Event()
        self.done = trio.Event()

    def connect(self) -> None:
        self.connected += 1
        if self.connected == self.subscribers:
            self.all_connected.set()

    def add(self, count: int, before: int) -> int:
        total = before + count
        self.received += count
        self.last = time.time()
        if before < self.events <= total:
            self.complete += 1
            if self.complete == self.subscribers:
                self.done.set()
        return total


async def sse_client(port: int, tally: Tally) -> None:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(b"GET /sse HTTP/1.1\r\nhost: bench\r\n\r\n")
        tally.connect()
        got, tail = 0, b""
        while got < tally.events:
            data = await stream.receive_some(65536)
            if not data:
                return
            chunk = tail + data
            # Event blocks end with a blank line; chunked framing adds CRLFs
            # but never two LFs in a row.
            got = tally.add(chunk.count(b"\n\n") - tail.count(b"\n\n"), got)
            tail = chunk[-1:]


async def ws_client(port: int, tally: Tally) -> None:
    from wsproto import ConnectionType, WSConnection
    from wsproto.events import AcceptConnection, Request, TextMessage

    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        ws = WSConnection(ConnectionType.CLIENT)
        await stream.send_all(ws.send(Request(host="bench", target="/ws")))
        got = 0
        while got < tally.events:
            data = await stream.receive_some(65536)
            if not data:
                return
            ws.receive_data(data)
            count = 0
            for event in ws.events():
                if isinstance(event, TextMessage):
                    count += event.data.count("\n\n")
                elif isinstance(event, AcceptConnection):
                    tally.connect()
            if count:
                got = tally.add(count, got)


async def clients(kind: str, port: int, subscribers: int, events: int) -> None:
    tally = Tally(subscribers, events)
    client = sse_client if kind == "sse" else ws_client
    async with trio.open_nursery() as nursery:
        for _ in range(subscribers):
            nursery.start_soon(client, port, tally)
        await tally.all_connected.wait()
        print("ready", flush=True)
        with trio.move_on_after(120):
            await tally.done.wait()
        usage = resource.getrusage(resource.RUSAGE_SELF)
        print(
            json.dumps(
                {
                    "received": tally.received,
                    "complete": tally.complete,
                    "last": tally.last,
                    "cpu_s": usage.ru_utime + usage.ru_stime,
                }
            ),
            flush=True,
        )
        nursery.cancel_scope.cancel()


# -- the driver -----------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return str(response.read().decode())


def wait_for(predicate: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("benchmark setup timed out")
        time.sleep(0.05)


def run_one(
    kind: str, port: int, server_pid: int, args: argparse.Namespace
) -> dict[str, Any]:
    base = f"http://127.0.0.1:{port}"
    command = [sys.executable, __file__, "--clients", kind, "--port", str(port)]
    command += ["--subscribers", str(args.subscribers), "--events", str(args.events)]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as proc:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        wait_for(lambda: get(base + "/stats") == str(args.subscribers), 30)
        start_cpu = proc_cpu_s(proc.pid)
        server_cpu = proc_cpu_s(server_pid)
        start = time.time()
        get(f"{base}/publish?n={args.events}&size={args.size}&yield={args.yield_every}")
        result: dict[str, Any] = json.loads(proc.stdout.readline())
        server_cpu = proc_cpu_s(server_pid) - server_cpu
        proc.wait(30)
    elapsed = result["last"] - start
    expected = args.subscribers * args.events
    return {
        "transport": kind,
        "delivered": result["received"],
        "expected": expected,
        "elapsed_s": elapsed,
        "events_per_s": result["received"] / elapsed,
        "client_cpu_pct": 100 * (result["cpu_s"] - start_cpu) / elapsed,
        "server_cpu_pct": 100 * server_cpu / elapsed,
    }


def proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument(
        "--yield-every",
        type=int,
        default=0,
        help="the publisher yields to the writers every this many events"
        " (default 0: it sends all events at once, as benchmarks/run.py does)",
    )
    parser.add_argument(
        "--order",
        type=lambda v: v.split(","),
        default=["sse", "ws"],
        help="transports to run, in order (default: sse,ws)",
    )
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--clients", choices=["sse", "ws"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--buffer", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if args.serve:
        trio.run(serve, args.port, args.buffer)
        return
    if args.clients:
        trio.run(clients, args.clients, args.port, args.subscribers, args.events)
        return

    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    server_cmd = [sys.executable, __file__, "--serve", "--port", str(port)]
    server_cmd += ["--buffer", str(args.events + 16)]
    server = subprocess.Popen(server_cmd, env=env)
    try:
        wait_for(lambda: _listening(port), 30)
        rows = [run_one(kind, port, server.pid, args) for kind in args.order]
    finally:
        server.terminate()
        server.wait(10)
    print(
        f"{args.subscribers} subscribers x {args.events} events of {args.size} B,"
        f" publisher yields every {args.yield_every or 'never'} (one run)"
    )
    print(
        f"{'transport':<10}{'events/s':>12}{'elapsed s':>11}{'delivered':>12}"
        f"{'server CPU':>12}{'client CPU':>12}"
    )
    for row in rows:
        print(
            f"{row['transport']:<10}{row['events_per_s']:>12,.0f}"
            f"{row['elapsed_s']:>11.2f}{row['delivered']:>12,}"
            f"{row['server_cpu_pct']:>11.0f}%{row['client_cpu_pct']:>11.0f}%"
        )
    rate = {row["transport"]: row["events_per_s"] for row in rows}
    if len(rate) == 2:
        print(f"WebSocket / SSE: {rate['ws'] / rate['sse']:.2f}")


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


if __name__ == "__main__":
    main()
