"""In-process fan-out cost: what one ``send`` costs per subscriber, no HTTP.

Compares ``Broadcaster.send`` with the loops the peers run: a
``put_nowait`` over per-subscriber ``asyncio.Queue``s (aiohttp-sse and the
usual sse-starlette recipe on asyncio) and a ``send_nowait`` over
per-subscriber anyio memory object streams (sse-starlette on trio), a bare
``trio.MemorySendChannel.send_nowait`` loop (what a Broadcaster built on trio
channels cannot go below) and a ``deque.append`` loop (no wake-up at all).

Each round subscribes ``--subscribers`` streams, sends ``--events`` events
(timed), then closes the streams. Prints one JSON object: the median over
rounds of nanoseconds per subscriber per event.

    python send_cost.py --subscribers 1000 --events 100 --rounds 7
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time

import anyio
import trio

import trio_sse

DATA = "0 0 0 " + "x" * 58


def _median_ns(samples: list[float]) -> float:
    return round(statistics.median(samples), 1)


def bench_trio_sse(subs: int, events: int, rounds: int) -> float:
    async def main() -> list[float]:
        out = []
        for _ in range(rounds):
            bc: trio_sse.Broadcaster[str, trio_sse.Event] = trio_sse.Broadcaster(
                buffer=events + 1
            )
            streams = [bc.subscribe("k") for _ in range(subs)]
            items = [trio_sse.Event(DATA) for _ in range(events)]
            for item in items:
                item.encode()
            t0 = time.perf_counter_ns()
            for item in items:
                bc.send("k", item)
            out.append((time.perf_counter_ns() - t0) / (events * subs))
            for stream in streams:
                await stream.aclose()
        return out

    return _median_ns(trio.run(main))


def bench_trio_channels(subs: int, events: int, rounds: int) -> float:
    async def main() -> list[float]:
        out = []
        for _ in range(rounds):
            pairs = [trio.open_memory_channel(events + 1) for _ in range(subs)]
            sends = [tx for tx, _ in pairs]
            t0 = time.perf_counter_ns()
            for seq in range(events):
                item = (str(seq), DATA)
                for tx in sends:
                    tx.send_nowait(item)
            out.append((time.perf_counter_ns() - t0) / (events * subs))
            for tx, rx in pairs:
                tx.close()
                rx.close()
        return out

    return _median_ns(trio.run(main))


def bench_anyio_streams(subs: int, events: int, rounds: int, backend: str) -> float:
    async def main() -> list[float]:
        out = []
        for _ in range(rounds):
            pairs = [anyio.create_memory_object_stream(events + 1) for _ in range(subs)]
            sends = {tx for tx, _ in pairs}
            dropped = 0
            t0 = time.perf_counter_ns()
            for seq in range(events):
                item = (str(seq), DATA)
                for tx in list(sends):
                    try:
                        tx.send_nowait(item)
                    except anyio.WouldBlock:
                        dropped += 1
            out.append((time.perf_counter_ns() - t0) / (events * subs))
            assert dropped == 0
            for tx, rx in pairs:
                tx.close()
                rx.close()
        return out

    return _median_ns(anyio.run(main, backend=backend))


def bench_asyncio_queues(subs: int, events: int, rounds: int) -> float:
    async def main() -> list[float]:
        out = []
        for _ in range(rounds):
            queues = {asyncio.Queue() for _ in range(subs)}
            dropped = 0
            t0 = time.perf_counter_ns()
            for seq in range(events):
                item = (str(seq), DATA)
                for queue in list(queues):
                    try:
                        queue.put_nowait(item)
                    except asyncio.QueueFull:
                        dropped += 1
            out.append((time.perf_counter_ns() - t0) / (events * subs))
            assert dropped == 0
        return out

    return _median_ns(asyncio.run(main()))


def bench_deque_append(subs: int, events: int, rounds: int) -> float:
    """No channel at all: one deque per subscriber, the lower bound of a loop."""
    import collections

    out = []
    for _ in range(rounds):
        queues = [collections.deque() for _ in range(subs)]
        t0 = time.perf_counter_ns()
        for seq in range(events):
            item = (str(seq), DATA)
            for queue in queues:
                queue.append(item)
        out.append((time.perf_counter_ns() - t0) / (events * subs))
    return _median_ns(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--events", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    n, e, r = args.subscribers, args.events, args.rounds
    result = {
        "subscribers": n,
        "events": e,
        "rounds": r,
        "ns_per_subscriber": {
            "trio_sse Broadcaster.send": bench_trio_sse(n, e, r),
            "asyncio.Queue put_nowait loop": bench_asyncio_queues(n, e, r),
            "anyio stream send_nowait loop (trio)": bench_anyio_streams(
                n, e, r, "trio"
            ),
            "anyio stream send_nowait loop (asyncio)": bench_anyio_streams(
                n, e, r, "asyncio"
            ),
            "trio channel send_nowait loop": bench_trio_channels(n, e, r),
            "deque.append loop (lower bound, no wake-up)": bench_deque_append(n, e, r),
        },
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
