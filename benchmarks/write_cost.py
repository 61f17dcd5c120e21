"""What counting a stream for metrics costs per write, in process, no HTTP.

Runs one :class:`~trio_sse._driver.StreamDriver` over a transport whose
``write`` does nothing, reading ``--events`` events from a trio memory
channel, one event per write (``coalesce_bytes=1``), with and without
:class:`~trio_sse.TransportCounters` (what ``trio_sse.metrics.Metrics``
puts in the scope). The two variants alternate round by round (ABBA, after
a full garbage collection each), so that a busy machine slows both alike.
Times are CPU time of the thread (not wall time), so that other processes
on the machine do not count. Prints one JSON object: the median over rounds
of nanoseconds per write for each, and their difference.

    python benchmarks/write_cost.py --events 20000 --rounds 15
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import time

import trio

import trio_sse
from trio_sse._driver import End, StreamDriver

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=15)
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
        }

    print(json.dumps(trio.run(run)))


if __name__ == "__main__":
    main()
