"""Memory a Broadcaster's history keeps: large events published into history.

Publishes ``--events`` events of ``--size`` bytes of data (by default just
under ``SseConfig.max_event_bytes``) to ``--keys`` keys of a
``Broadcaster(history=--history)`` built with its defaults otherwise, with
one subscriber per key that takes every event and encodes it, as a response
writing it would (the encoding is cached on the event the history keeps).
Then it closes the subscribers and prints one JSON object: the resident
memory (VmRSS) before and after, what the history still retains, and the
event size.

trio_sse is imported from ``sys.path``, so one command measures any
checkout::

    PYTHONPATH=. python benchmarks/history_rss.py --history 200 --events 300
"""

from __future__ import annotations

import argparse
import gc
import json
from pathlib import Path

import trio

import trio_sse


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    raise RuntimeError("no VmRSS in /proc/self/status")


async def run(args: argparse.Namespace) -> dict[str, object]:
    bc: trio_sse.Broadcaster[str, trio_sse.Event] = trio_sse.Broadcaster(
        buffer=args.events + 1, history=args.history
    )
    size = args.size or bc.config.max_event_bytes - 64
    keys = [f"key{k}" for k in range(args.keys)]
    streams = [bc.subscribe(key) for key in keys]
    gc.collect()
    before = rss_mib()
    for n in range(args.events):
        for key, stream in zip(keys, streams, strict=True):
            # Distinct text for every event, as real payloads are.
            data = f"{n:08d}{key:>12}" + "x" * (size - 20)
            bc.send(key, trio_sse.Event(data))
            stream.receive_nowait().encode()  # what a response writing it does
        await trio.lowlevel.checkpoint()
    for stream in streams:
        await stream.aclose()
    gc.collect()
    after = rss_mib()
    return {
        "history": args.history,
        "history_bytes": getattr(bc.backend, "history_bytes", None),
        "keys": args.keys,
        "events": args.events,
        "event_data_bytes": size,
        "rss_mib_before": before,
        "rss_mib_after": after,
        "rss_mib_kept": round(after - before, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--history", type=int, default=200)
    parser.add_argument("--events", type=int, default=300)
    parser.add_argument("--keys", type=int, default=1)
    parser.add_argument(
        "--size", type=int, default=0, help="data bytes (default: max_event_bytes - 64)"
    )
    args = parser.parse_args()
    print(json.dumps(trio.run(run, args)))


if __name__ == "__main__":
    main()
