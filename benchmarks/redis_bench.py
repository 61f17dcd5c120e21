"""Figures of the Redis backend (trio_sse.redis.RedisBackend).

Starts its own redis-server (on a free port, in a temporary directory) and
measures:

- ``fanout``: events/s from 1 publisher through Redis to 2 subscriber
  processes with 100 subscribers each (one key);
- ``restart``: time from a restarted redis-server answering to the first
  event delivered again, with a publisher retrying through the outage;
- ``idle``: CPU used by a process holding idle subscribers (1000 by default,
  over 100 keys) during 10 s;
- ``local``: one process, 100 subscribers: the memory backend's ``send()``
  against ``await publish()`` over Redis (events/s, delivery latency);
- ``memory``: Redis memory per retained entry for a 100-byte JSON item;
- ``baseline``: plain coredis ``XADD`` round trips per second, to put the
  others in proportion on the machine at hand.

Usage: ``python benchmarks/redis_bench.py [baseline fanout restart idle local memory]``
(all by default), from the repository root.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import coredis
import trio
import trio.lowlevel
import trio.testing

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from trio_sse import Broadcaster, LagPolicy  # noqa: E402
from trio_sse.redis import RedisBackend, RedisUnavailable  # noqa: E402

PAYLOAD = {"user": "bench", "text": "x" * 60, "n": 0}  # ~100 bytes of JSON


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Redis:
    """A redis-server in a temporary directory (AOF, fsync every second)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> float:
        """Start and wait for PING; return the time.monotonic() it answered."""
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("redis-server not found: apt-get install redis-server")
        self.process = subprocess.Popen(
            [binary, "--bind", "127.0.0.1", "--port", str(self.port),
             "--dir", str(self.directory), "--save", "", "--appendonly", "yes",
             "--logfile", str(self.directory / "redis.log")],
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), 1) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return time.monotonic()
            except OSError:
                pass
            time.sleep(0.002)
        raise RuntimeError("redis-server did not start")

    def kill(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
            self.process = None


@contextmanager
def redis_server() -> Iterator[Redis]:
    with tempfile.TemporaryDirectory() as tmp:
        server = Redis(Path(tmp))
        server.start()
        try:
            yield server
        finally:
            server.kill()


def open_broadcaster(url: str, buffer: int = 1024, **kwargs: Any) -> Any:
    client: coredis.Redis[Any] = coredis.Redis.from_url(url)
    backend: RedisBackend[str, Any] = RedisBackend(client, **kwargs)

    class Both:
        async def __aenter__(self) -> Broadcaster[str, Any]:
            await client.__aenter__()
            self.bc: Broadcaster[str, Any] = Broadcaster(buffer, backend=backend)
            return await self.bc.__aenter__()

        async def __aexit__(self, *exc: Any) -> None:
            await self.bc.__aexit__(*exc)
            await client.__aexit__(*exc)

    return Both()


# -- fan-out: 1 publisher -> 2 processes x 100 subscribers ----------------------


async def subscriber_process(url: str, subscribers: int, count: int) -> None:
    """Child: ``subscribers`` subscribers of key "fan"; print when all got ``count``."""
    async with open_broadcaster(url) as bc:
        done = 0
        all_done = trio.Event()

        async def consume(stream: Any) -> None:
            nonlocal done
            async with stream:
                async for item in stream:
                    if item["n"] == count - 1:
                        break
            done += 1
            if done == subscribers:
                all_done.set()

        async with trio.open_nursery() as nursery:
            for _ in range(subscribers):
                stream = bc.subscribe("fan").on_lag(LagPolicy.SKIP)
                nursery.start_soon(consume, stream)
            await trio.testing.wait_all_tasks_blocked()
            print("ready", flush=True)
            await all_done.wait()
            stats = bc.stats()
            print(f"done {time.time():.6f} missed={stats.missed}", flush=True)


async def fanout(url: str, count: int = 5_000, subscribers: int = 100) -> None:
    children = []
    async with trio.open_nursery() as nursery:
        for _ in range(2):
            proc = await trio.lowlevel.open_process(
                [sys.executable, __file__, "_child", url, str(subscribers), str(count)],
                stdout=subprocess.PIPE,
            )
            children.append(proc)
        lines: list[list[str]] = [[] for _ in children]
        ready = [trio.Event() for _ in children]
        finished = [trio.Event() for _ in children]

        async def read(i: int, proc: trio.Process) -> None:
            buffer = b""
            assert proc.stdout is not None
            async for chunk in proc.stdout:
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    lines[i].append(line.decode())
                    if line == b"ready":
                        ready[i].set()
                    elif line.startswith(b"done"):
                        finished[i].set()

        for i, proc in enumerate(children):
            nursery.start_soon(read, i, proc)
        for event in ready:
            await event.wait()
        async with open_broadcaster(url) as bc:
            start = time.time()
            for n in range(count):
                await bc.publish("fan", {**PAYLOAD, "n": n})
            published = time.time()
            for event in finished:
                await event.wait()
        ends = [float(ls[-1].split()[1]) for ls in lines]
        missed = [ls[-1].split()[2] for ls in lines]
        elapsed = max(ends) - start
        print(
            f"fanout: {count} events, 1 publisher -> 2 processes x {subscribers} "
            f"subscribers: publish {count / (published - start):,.0f} events/s, "
            f"delivered to all in {elapsed:.2f} s = {count / elapsed:,.0f} events/s "
            f"({2 * subscribers * count / elapsed:,.0f} deliveries/s); {missed}"
        )
        for proc in children:
            await proc.wait()


# -- restart: Redis killed and restarted --------------------------------------------


async def restart(server: Redis, outage: float = 1.0) -> None:
    async with (
        open_broadcaster(server.url) as sub,
        open_broadcaster(server.url, timeout=0.5) as pub,
    ):
        stream = sub.subscribe("restart")
        async with stream:
            await pub.publish("restart", "before")
            assert await stream.__anext__() == "before"
            server.kill()
            killed = time.monotonic()
            failures = 0
            restarted: list[float] = []

            async def publisher() -> None:
                nonlocal failures
                n = 0
                while True:
                    try:
                        await pub.publish("restart", n)
                        n += 1
                    except RedisUnavailable:
                        failures += 1
                    await trio.sleep(0.001)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(publisher)
                await trio.sleep(outage)
                restarted.append(await trio.to_thread.run_sync(server.start))
                await stream.__anext__()
                delivered = time.monotonic()
                nursery.cancel_scope.cancel()
    print(
        f"restart: outage {restarted[0] - killed:.2f} s; restarted redis-server "
        f"answered -> first event delivered again in "
        f"{delivered - restarted[0]:.3f} s (max_backoff=2 s); {failures} publishes "
        "raised RedisUnavailable during the outage"
    )


# -- idle subscribers ---------------------------------------------------------------


async def idle(url: str, subscribers: int = 1000, keys: int = 100) -> None:
    async with open_broadcaster(url) as bc:
        streams = [bc.subscribe(f"idle{i % keys}") for i in range(subscribers)]

        async def consume(stream: Any) -> None:
            async with stream:
                async for _ in stream:
                    pass

        async with trio.open_nursery() as nursery:
            for stream in streams:
                nursery.start_soon(consume, stream)
            await trio.sleep(1)
            before = resource.getrusage(resource.RUSAGE_SELF)
            wall = 10.0
            await trio.sleep(wall)
            after = resource.getrusage(resource.RUSAGE_SELF)
            cpu = (after.ru_utime - before.ru_utime) + (
                after.ru_stime - before.ru_stime
            )
            nursery.cancel_scope.cancel()
    print(
        f"idle: {subscribers} subscribers on {keys} keys: {cpu * 1000:.1f} ms CPU "
        f"in {wall:.0f} s ({100 * cpu / wall:.3f} % of a core)"
    )


# -- one process: memory send() against publish() over Redis ------------------------


async def local(url: str, count: int = 5_000, subscribers: int = 100) -> None:
    async def run(bc: Broadcaster[str, Any], redis: bool) -> tuple[float, float, int]:
        done = trio.Event()
        remaining = subscribers
        latencies: list[float] = []

        async def consume(stream: Any) -> None:
            nonlocal remaining
            n = 0
            async with stream:
                async for item in stream:
                    n += 1
                    if n % 100 == 0:
                        latencies.append(time.perf_counter() - item["t"])
                    if item["n"] == count - 1:
                        break
            remaining -= 1
            if not remaining:
                done.set()

        async with trio.open_nursery() as nursery:
            for _ in range(subscribers):
                nursery.start_soon(
                    consume, bc.subscribe("local").on_lag(LagPolicy.SKIP)
                )
            await trio.testing.wait_all_tasks_blocked()
            start = time.perf_counter()
            for n in range(count):
                item = {**PAYLOAD, "n": n, "t": time.perf_counter()}
                if redis:
                    await bc.publish("local", item)
                else:
                    bc.send("local", item)
                    # Let subscribers run, as a server's other tasks would.
                    await trio.lowlevel.checkpoint()
            await done.wait()
            elapsed = time.perf_counter() - start
        latencies.sort()
        missed = bc.stats().missed
        return count / elapsed, latencies[len(latencies) // 2] * 1000, missed

    memory: Broadcaster[str, Any] = Broadcaster(1024)
    rate_m, lat_m, missed_m = await run(memory, redis=False)
    async with open_broadcaster(url) as bc:
        rate_r, lat_r, missed_r = await run(bc, redis=True)
    print(
        f"local: 1 process, {subscribers} subscribers, {count} events, one publisher "
        f"awaiting each event: memory send() + checkpoint {rate_m:,.0f} events/s "
        f"(median send-to-receive {lat_m:.2f} ms, {missed_m} missed); await publish() "
        f"over Redis {rate_r:,.0f} events/s ({lat_r:.2f} ms, {missed_r} missed)"
    )


# -- baseline: what this machine does without trio_sse ---------------------------


async def baseline(url: str, count: int = 2_000) -> None:
    client: coredis.Redis[Any] = coredis.Redis.from_url(url)
    async with client:
        await client.ping()
        start = time.perf_counter()
        for _ in range(count):
            await client.xadd("baseline", {"v": "x" * 100})
        elapsed = time.perf_counter() - start
        await client.delete(["baseline"])
    print(
        f"baseline: plain coredis XADD round trips, one after another: "
        f"{count / elapsed:,.0f}/s"
    )


# -- Redis memory per entry ------------------------------------------------------


async def memory(url: str, entries: int = 10_000) -> None:
    async with open_broadcaster(url, maxlen=entries) as bc:
        client = bc.backend.client  # type: ignore[attr-defined]
        for n in range(entries):
            await bc.publish("mem", {**PAYLOAD, "n": n})
        used = await client.memory_usage("sse:mem", samples=0)
        length = await client.xlen("sse:mem")
    print(
        f"memory: {length} entries of a ~100-byte JSON item: {used / 1e6:.2f} MB "
        f"({used / length:.0f} bytes per entry)"
    )


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_child":
        url, subscribers, count = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
        trio.run(subscriber_process, url, subscribers, count)
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    names = ["baseline", "fanout", "restart", "idle", "local", "memory"]
    parser.add_argument("which", nargs="*", choices=names, default=names)
    args = parser.parse_args()
    version = subprocess.run(
        ["redis-server", "--version"], capture_output=True, text=True, check=True
    ).stdout.split()[2]
    print(
        f"redis-server {version}, coredis {coredis.__version__}, {os.cpu_count()} CPUs"
    )
    with redis_server() as server:
        for name in args.which:
            if name == "restart":
                trio.run(restart, server)
            else:
                trio.run(globals()[name], server.url)


if __name__ == "__main__":
    main()
