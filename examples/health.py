"""A health feed: one ``sse_channel`` per client pushing a status every few seconds.

Run ``python examples/health.py`` and open http://127.0.0.1:8000/.

No broadcaster here: each client gets its own channel function, running in
the response's nursery. It measures the process (event-loop lag, uptime,
open connections, disk space, load average) and sends one ``status`` event
per period. The function is cancelled as soon as the client goes away.
"""

from __future__ import annotations

import os
import shutil
import time
from typing import Any

import trio
from _router import App, Request, json_response, page, run

from trio_sse import Event, Sender, SseConfig, sse_channel

LAG_WARNING_MS = 100.0


def make_app(*, interval: float = 2.0) -> App:
    """The health application; *interval* is the period of the status (seconds)."""
    app = App()
    started = time.time()
    watching = 0
    config = SseConfig(keep_alive=15.0, retry=1.0)

    def status(lag_ms: float) -> dict[str, Any]:
        disk = shutil.disk_usage(os.getcwd())
        load = os.getloadavg() if hasattr(os, "getloadavg") else None
        checks = {
            "event_loop": "ok" if lag_ms < LAG_WARNING_MS else "slow",
            "disk": "ok" if disk.free / disk.total > 0.05 else "low",
        }
        return {
            "status": "ok" if all(v == "ok" for v in checks.values()) else "degraded",
            "checks": checks,
            "event_loop_lag_ms": round(lag_ms, 2),
            "uptime_s": round(time.time() - started),
            "watching": watching,
            "disk_free_gb": round(disk.free / 1e9, 1),
            "load_average": load and [round(x, 2) for x in load],
            "time": round(time.time() * 1000),
        }

    async def feed(tx: Sender) -> None:
        nonlocal watching
        watching += 1
        try:
            lag = 0.0
            while True:
                await tx.send(Event.json(status(lag * 1000), event="status"))
                # How late the sleep wakes up is how busy the event loop is.
                due = trio.current_time() + interval
                await trio.sleep_until(due)
                lag = max(0.0, trio.current_time() - due)
        finally:
            watching -= 1

    @app.route("GET", "/")
    async def index(request: Request) -> Any:
        return page("health.html")

    @app.route("GET", "/health/events")
    async def events(request: Request) -> Any:
        return sse_channel(feed, config)

    @app.route("GET", "/health")
    async def once(request: Request) -> Any:
        return json_response(status(0.0))

    return app


app = make_app()

if __name__ == "__main__":
    run(app, "trio_sse health")
