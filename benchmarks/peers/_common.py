"""Shared by every benchmark server: command line, event payload, schedule.

Each event's data is ``"<seq> <scheduled_ns> <sent_ns> <padding>"``, padded
to the requested size, where both stamps are ``time.monotonic_ns()`` values
(CLOCK_MONOTONIC, shared by every process on the host). The load client
derives latency (receive - sent) and lateness (receive - scheduled) from them.
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import time
from dataclasses import dataclass
from urllib.parse import parse_qs

KEY = "bench"


def parse_args(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--buffer",
        type=int,
        default=1024,
        help="per-subscriber queue size (events beyond it are dropped)",
    )
    parser.add_argument("--keep-alive", type=float, default=15.0)
    parser.add_argument(
        "--write-timeout",
        type=float,
        default=None,
        help="trio_sse only: SseConfig.write_timeout (0 disables; default: its own)",
    )
    args = parser.parse_args()
    raise_nofile()
    threshold = os.environ.get("SSE_BENCH_GC_THRESHOLD")
    if threshold:  # run.py --gc-threshold: the same setting for every server
        gc.set_threshold(*(int(x) for x in threshold.split(",")))
    return args


def raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


@dataclass(frozen=True)
class PublishSpec:
    """What ``POST /publish?n=&size=&rate=`` asks for."""

    n: int = 1000
    size: int = 64
    rate: float = 0.0  # events per second; 0 means as fast as possible

    @classmethod
    def from_query(cls, query: bytes | str) -> PublishSpec:
        if isinstance(query, bytes):
            query = query.decode("latin-1")
        q = {k: v[-1] for k, v in parse_qs(query).items()}
        return cls(
            n=int(q.get("n", 1000)),
            size=int(q.get("size", 64)),
            rate=float(q.get("rate", 0)),
        )

    def delay_until(self, start_ns: int, seq: int) -> tuple[int, float]:
        """The event's scheduled time and how long to sleep until it."""
        if self.rate <= 0:
            return 0, 0.0
        scheduled = start_ns + int(seq * 1e9 / self.rate)
        return scheduled, (scheduled - time.monotonic_ns()) / 1e9


def payload(seq: int, scheduled_ns: int, sent_ns: int, size: int) -> str:
    head = f"{seq} {scheduled_ns or sent_ns} {sent_ns} "
    return head + "x" * max(0, size - len(head))
