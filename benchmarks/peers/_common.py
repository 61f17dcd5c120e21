"""Shared by every benchmark server: command line, event payload, schedule.

Each event's data is ``"<seq> <scheduled_ns> <sent_ns> <padding>"``, padded
to the requested size, where both stamps are ``time.monotonic_ns()`` values
(CLOCK_MONOTONIC, shared by every process on the host). The load client
derives latency (receive - sent) and lateness (receive - scheduled) from them.

``POST /publish?n=&size=&rate=&publishers=&checkpoint=`` asks a server to
publish ``n`` events. Unless ``checkpoint=0``, every publisher passes its
event loop's checkpoint before each event, as a publisher fed by a socket, by
Redis or by request handlers does: at ``rate=0`` a bare checkpoint
(``await trio.sleep(0)``, ``await asyncio.sleep(0)``, ``setImmediate`` in
Node), when paced a sleep until that event's own scheduled time, however
late it already is. ``publishers=P`` runs ``P`` publisher tasks that take the
next sequence number in turn, each when it runs. ``checkpoint=0`` is the old
burst: one task publishes all the events without ever yielding.
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
    parser.add_argument(
        "--gc-freeze",
        choices=("off", "on", "always"),
        default="off",
        help="trio_sse only: serve(gc_freeze=False, True or 'always')",
    )
    parser.add_argument(
        "--variant",
        default="response",
        help="trio_sse only: how the response is built (response, cast)",
    )
    args = parser.parse_args()
    raise_nofile()
    apply_gc_threshold()
    return args


def apply_gc_threshold() -> None:
    """run.py --gc-threshold: the same setting for every Python server."""
    threshold = os.environ.get("SSE_BENCH_GC_THRESHOLD")
    if threshold:
        gc.set_threshold(*(int(x) for x in threshold.split(",")))


def raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


@dataclass(frozen=True)
class PublishSpec:
    """What ``POST /publish?n=&size=&rate=&publishers=&checkpoint=`` asks for."""

    n: int = 1000
    size: int = 64
    rate: float = 0.0  # events per second; 0 means as fast as possible
    publishers: int = 1  # publisher tasks taking sequence numbers in turn
    checkpoint: bool = True  # False: the old burst, no checkpoint between events

    def __post_init__(self) -> None:
        if self.publishers < 1:
            raise ValueError("publishers must be at least 1")
        if self.publishers > 1 and self.rate > 0:
            raise ValueError("several publishers publish at the maximum rate only")
        if not self.checkpoint and (self.rate > 0 or self.publishers > 1):
            raise ValueError("checkpoint=0 is a single publisher at the maximum rate")

    @classmethod
    def from_query(cls, query: bytes | str) -> PublishSpec:
        if isinstance(query, bytes):
            query = query.decode("latin-1")
        q = {k: v[-1] for k, v in parse_qs(query).items()}
        return cls(
            n=int(q.get("n", 1000)),
            size=int(q.get("size", 64)),
            rate=float(q.get("rate", 0)),
            publishers=int(q.get("publishers", 1)),
            checkpoint=q.get("checkpoint", "1") != "0",
        )


class Schedule:
    """The sequence numbers and schedule shared by a run's publisher tasks.

    A publisher loops: ``delay()`` (``None`` when every event is taken),
    then -- unless ``spec.checkpoint`` is off -- its event loop's sleep for
    that long (``0`` is a bare checkpoint), then ``take()`` the next event
    and publish it before its next await, so that sequence numbers go out in
    order whichever task runs.
    """

    def __init__(self, spec: PublishSpec) -> None:
        self.spec = spec
        self.start_ns = time.monotonic_ns()
        self.next_seq = 0

    def scheduled_ns(self, seq: int) -> int:
        if self.spec.rate <= 0:
            return 0
        return self.start_ns + int(seq * 1e9 / self.spec.rate)

    def delay(self) -> float | None:
        """Seconds until the next event is due (never negative), or None."""
        if self.next_seq >= self.spec.n:
            return None
        if self.spec.rate <= 0:
            return 0.0
        due = self.scheduled_ns(self.next_seq) - time.monotonic_ns()
        return max(0.0, due / 1e9)

    def take(self) -> tuple[int, str] | None:
        """The next event's sequence number and data, or None when done."""
        seq = self.next_seq
        if seq >= self.spec.n:
            return None
        self.next_seq = seq + 1
        return seq, payload(
            seq, self.scheduled_ns(seq), time.monotonic_ns(), self.spec.size
        )


def payload(seq: int, scheduled_ns: int, sent_ns: int, size: int) -> str:
    head = f"{seq} {scheduled_ns or sent_ns} {sent_ns} "
    return head + "x" * max(0, size - len(head))
