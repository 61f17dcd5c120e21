"""A live metrics dashboard: the server measures itself and streams the numbers.

Run ``python examples/dashboard.py`` and open http://127.0.0.1:8000/.

A sampler task measures this very process a few times a second (CPU time,
resident memory, open file descriptors, trio tasks, events delivered per
second, connected clients) and publishes each sample to every dashboard
through a :class:`trio_sse.Broadcaster`. Dashboards subscribe with the SKIP
lag policy: a browser that falls behind skips to the newest sample instead
of replaying stale ones. A newly opened page first gets the recent samples
(``replay`` chained before the live stream), so its charts start full.

The page's buttons add in-process subscribers to a 20 Hz ticker for 30
seconds, to watch fan-out push the events/s curve and the task count up.

``GET /metrics`` is the Prometheus exposition of :mod:`trio_sse.metrics`
(streams open, events and bytes written, stream ends by reason, lag outcomes,
subscribers per key); the page shows a few of its numbers, read from the same
registry a scrape reads. Needs ``pip install trio-sse[metrics]``.
"""

from __future__ import annotations

import collections
import os
import random
import resource
import sys
import time
from typing import Any

import trio
from _router import App, Request, json_response, page, response, run

from trio_sse import Broadcaster, Event, LagPolicy, SseConfig, chain, replay
from trio_sse.metrics import Metrics

HISTORY = 120
MAX_LOAD_SUBSCRIBERS = 5_000
LOAD_SECONDS = 30.0
SSE = {"transport": "sse"}


def count_tasks() -> int:
    """How many trio tasks this run has right now."""
    count = 0
    todo = [trio.lowlevel.current_root_task()]
    while todo:
        task = todo.pop()
        if task is None:
            continue
        count += 1
        for nursery in task.child_nurseries:
            todo.extend(nursery.child_tasks)
    return count


def rss_bytes() -> int:
    """Resident memory of this process (current on Linux, peak elsewhere)."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024


def open_fds() -> int | None:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return None


def cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


class Dashboard:
    """The metrics broadcaster, the ticker that loads it, and their tasks."""

    def __init__(self, *, interval: float, tick_rate: float) -> None:
        self.interval = interval
        self.tick_rate = tick_rate
        #: Samples for the dashboards; a small buffer, the SKIP policy.
        self.metrics: Broadcaster[str, Event] = Broadcaster(
            buffer=8, config=SseConfig(keep_alive=10.0, retry=2.0)
        )
        #: Ticks for the synthetic load subscribers.
        self.ticks: Broadcaster[str, float] = Broadcaster(buffer=64)
        self.recent: collections.deque[dict[str, Any]] = collections.deque(
            maxlen=HISTORY
        )
        self.load_nursery: trio.Nursery | None = None
        #: Events queued for subscribers (one per subscriber per item).
        self.delivered = 0
        #: Set to take a sample at once (a new dashboard wants to count itself).
        self.wake = trio.Event()
        self.started = time.time()
        #: The Prometheus metrics of this server (``GET /metrics``).
        self.prometheus = Metrics()
        self.prometheus.watch(self.metrics, "dashboards")
        self.prometheus.watch(self.ticks, "ticks")

    def scraped(self, name: str, **labels: str) -> float:
        """One number of ``GET /metrics``, as a scrape reads it."""
        return self.prometheus.registry.get_sample_value(name, labels) or 0.0

    def sample(self, previous: dict[str, float]) -> dict[str, Any]:
        """Measure the process; *previous* carries the counters between calls."""
        now = trio.current_time()
        cpu = cpu_seconds()
        sent = self.delivered
        dt = now - previous.get("now", now)
        cpu_pct = 100.0 * (cpu - previous.get("cpu", cpu)) / dt if dt > 0 else 0.0
        rate = (sent - previous.get("sent", sent)) / dt if dt > 0 else 0.0
        previous.update(now=now, cpu=cpu, sent=sent)
        return {
            "t": round(time.time() * 1000),
            "cpu": round(cpu_pct, 1),
            "rss_mb": round(rss_bytes() / 2**20, 1),
            "events_per_s": round(rate),
            "clients": self.metrics.subscriber_count("metrics"),
            "load_subscribers": self.ticks.subscriber_count("ticks"),
            "tasks": count_tasks(),
            "fds": open_fds(),
            "skipped": self.metrics.stats().missed,
            "uptime_s": round(time.time() - self.started),
            "pid": os.getpid(),
            # From the Prometheus registry (the SSE streams of this server).
            "streams_open": round(self.scraped("trio_sse_streams_open", **SSE)),
            "events_written": round(
                self.scraped("trio_sse_events_written_total", **SSE)
            ),
            "bytes_written": round(self.scraped("trio_sse_written_bytes_total", **SSE)),
            "lag_skips": round(
                sum(
                    self.scraped(
                        "trio_sse_broadcast_lags_total",
                        broadcaster=name,
                        outcome="skipped",
                    )
                    for name in ("dashboards", "ticks")
                )
            ),
        }

    async def sampler(self) -> None:
        previous: dict[str, float] = {}
        while True:
            sample = self.sample(previous)
            self.recent.append(sample)
            # Encoded once here, whatever the number of dashboards.
            event = Event.json(sample, event="metrics")
            self.delivered += self.metrics.send("metrics", event)
            self.wake = trio.Event()
            with trio.move_on_after(self.interval):
                await self.wake.wait()

    async def ticker(self) -> None:
        value = 100.0
        while True:
            value = max(1.0, value + random.gauss(0, 1))
            self.delivered += self.ticks.send("ticks", value)
            await trio.sleep(1 / self.tick_rate)

    async def load_owner(self) -> None:
        """Owns the synthetic subscribers' tasks."""
        async with trio.open_nursery() as nursery:
            self.load_nursery = nursery
            try:
                await trio.sleep_forever()
            finally:
                self.load_nursery = None

    async def load_subscriber(self, seconds: float) -> None:
        with trio.move_on_after(seconds):
            async with self.ticks.subscribe("ticks").on_lag(LagPolicy.SKIP) as stream:
                async for _ in stream:
                    pass


def make_app(*, interval: float = 0.5, tick_rate: float = 20.0) -> App:
    """The dashboard application; *interval* is the sampling period (seconds)."""
    dash = Dashboard(interval=interval, tick_rate=tick_rate)
    app = App()
    app.state["dashboard"] = dash
    # Every stream of this app is counted in the Prometheus metrics.
    app.wrap(dash.prometheus.middleware)
    app.background(dash.sampler)
    app.background(dash.ticker)
    app.background(dash.load_owner)

    @app.route("GET", "/")
    async def index(request: Request) -> Any:
        return page("dashboard.html", interval_ms=str(round(interval * 1000)))

    @app.route("GET", "/metrics")
    async def prometheus(request: Request) -> Any:
        return dash.prometheus.app

    @app.route("GET", "/metrics/events")
    async def events(request: Request) -> Any:
        # Subscribe first (nothing published after this line is missed), then
        # send the recent samples ahead of the live ones.
        live = dash.metrics.subscribe("metrics").on_lag(LagPolicy.SKIP)
        backlog = Event.json(list(dash.recent), event="history")
        dash.wake.set()
        return dash.metrics.response(chain(replay([backlog]), live))

    @app.route("POST", "/load")
    async def add_load(request: Request) -> Any:
        try:
            count = int((await request.form()).get("n", "100"))
        except ValueError:
            return response("n must be an integer", status=400)
        room = MAX_LOAD_SUBSCRIBERS - dash.ticks.subscriber_count("ticks")
        count = max(0, min(count, room))
        if dash.load_nursery is None:
            return response("not running", status=503)
        for _ in range(count):
            dash.load_nursery.start_soon(dash.load_subscriber, LOAD_SECONDS)
        return json_response({"added": count, "seconds": LOAD_SECONDS})

    return app


app = make_app()

if __name__ == "__main__":
    run(app, "trio_sse dashboard")
