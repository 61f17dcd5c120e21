"""What metrics cost: per write of a stream, and per scrape. In process, no HTTP.

Writes: runs one :class:`~trio_sse._driver.StreamDriver` over a transport whose
``write`` does nothing, reading ``--events`` events from a trio memory
channel, one event per write (``coalesce_bytes=1``), with and without
:class:`~trio_sse.TransportCounters` (what ``trio_sse.metrics.Metrics``
puts in the scope). The two variants alternate round by round (ABBA, after
a full garbage collection each), so that a busy machine slows both alike.
The hook alone: the statements a write runs for the counters, timed with
:mod:`timeit` (the end-to-end difference is often below the noise of a
busy machine).

Scrapes: the Prometheus exposition of a ``Metrics`` watching one
broadcaster whose keys have one subscriber each, for ``--keys`` (a
comma-separated list of key counts); the busiest 10 keys are labelled.

Times are CPU time of the thread (not wall time), so that other processes
on the machine do not count. Prints one JSON object: the median over rounds
of nanoseconds per write with and without counters and their difference,
and the mean microseconds per scrape for each key count.

    python benchmarks/metrics_cost.py --events 20000 --rounds 15
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import time
import timeit

import trio
from prometheus_client import generate_latest

import trio_sse
from trio_sse._driver import End, StreamDriver
from trio_sse.metrics import Metrics

DATA = "0 0 0 " + "x" * 58


class NullTransport:
    """A client that reads everything at once, and never leaves."""

    def __init__(self) -> None:
        self.writes = 0

    async def open(self) -> None:
        pass

    async def write(self, data: bytes) -> None:
        self.writes += 1

    async def receive(self) -> str | None:
        await trio.sleep_forever()
        return None  # pragma: no cover

    async def close(self, end: End) -> None:
        pass


async def one_round(events: int, counted: bool) -> float:
    """Nanoseconds per write of one stream of ``events`` events."""
    config = trio_sse.SseConfig(coalesce_bytes=1, keep_alive=None, write_delay=0)
    tx, rx = trio.open_memory_channel[trio_sse.Event](events)
    for _ in range(events):
        tx.send_nowait(trio_sse.Event(DATA))
    tx.close()
    transport = NullTransport()
    counters = trio_sse.TransportCounters() if counted else None
    driver = StreamDriver(transport, rx, config, counters=counters)
    gc.collect()
    start = time.thread_time_ns()
    await driver.run()
    elapsed = time.thread_time_ns() - start
    if counters is not None and counters.events != events:
        raise RuntimeError(f"counted {counters.events} events, sent {events}")
    return elapsed / transport.writes


class _Driver:
    __slots__ = ("_counters",)

    def __init__(self, counters: trio_sse.TransportCounters | None) -> None:
        self._counters = counters


# What StreamDriver._send runs for the counters, per write.
HOOK = """\
counters = driver._counters
if counters is not None:
    counters.events += events
    counters.bytes += len(body)
"""


def hook_ns(counted: bool) -> float:
    """Nanoseconds the counters' statements take per write (best of 7)."""
    namespace = {
        "driver": _Driver(trio_sse.TransportCounters() if counted else None),
        "events": 1,
        "body": b"x" * 70,
    }
    timer = timeit.Timer(HOOK, globals=namespace, timer=time.thread_time)
    loops = 1_000_000
    return min(timer.repeat(7, loops)) / loops * 1e9


async def scrape_us(keys: int) -> float:
    """Microseconds per scrape with a broadcaster of ``keys`` keys."""
    metrics = Metrics()
    bc: trio_sse.Broadcaster[str, str] = trio_sse.Broadcaster()
    metrics.watch(bc, "bc")
    streams = [bc.subscribe(f"key{n}") for n in range(keys)]
    try:
        generate_latest(metrics.registry)  # warm up
        scrapes = max(5, min(200, 200_000 // keys))
        gc.collect()
        start = time.thread_time_ns()
        for _ in range(scrapes):
            generate_latest(metrics.registry)
        return (time.thread_time_ns() - start) / scrapes / 1000
    finally:
        for stream in streams:
            stream.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--keys", default="1,1000,100000")
    opts = parser.parse_args()

    async def run() -> dict[str, float]:
        plain: list[float] = []
        counted: list[float] = []
        await one_round(1000, True)  # warm up
        for index in range(opts.rounds):
            order = (False, True) if index % 2 == 0 else (True, False)
            for counted_round in order:
                cost = await one_round(opts.events, counted_round)
                (counted if counted_round else plain).append(cost)
        without, with_ = statistics.median(plain), statistics.median(counted)
        return {
            "events": opts.events,
            "rounds": opts.rounds,
            "ns_per_write_without_metrics": round(without, 1),
            "ns_per_write_with_metrics": round(with_, 1),
            "difference_ns": round(with_ - without, 1),
            "hook_ns_without_metrics": round(hook_ns(False), 1),
            "hook_ns_with_metrics": round(hook_ns(True), 1),
            "us_per_scrape": {
                keys: round(await scrape_us(int(keys))) for keys in opts.keys.split(",")
            },
        }

    print(json.dumps(trio.run(run)))


if __name__ == "__main__":
    main()
