"""trio_sse benchmark server for ``hypercorn --worker-class trio --workers N``.

The deployment of docs/redis.md: every worker process enters its own
``Broadcaster`` in the ASGI lifespan, on the memory backend or on
``RedisBackend`` (one coredis client per process), and Hypercorn's worker
processes accept from one shared listening socket. Routes as in
``trio_sse_app.py``:

- ``GET /sse``: one subscriber of the ``bench`` key,
  ``bc.response(bc.subscribe(KEY).on_lag(LagPolicy.SKIP))``;
- ``POST /publish?n=&size=&rate=``: answers 202 at once, then the request's
  task publishes every event with ``await bc.publish(KEY, Event(data))``,
  after a sleep until the event's scheduled time (``0``: a bare
  checkpoint), as a request handler relaying events does. Over Redis each
  publish is one ``XADD`` round trip, and every worker, the publishing one
  included, gets the event back from its blocking ``XREAD``. One publisher
  only: concurrent awaited publishes may reach Redis out of sequence;
- ``GET /stats``: this worker's subscriber count and process id.

Hypercorn passes no arguments to an application, so the settings come from
the environment (``run.py`` sets them): ``SSE_BENCH_BACKEND`` (``memory`` or
``redis``), ``SSE_BENCH_REDIS_URL``, ``SSE_BENCH_BUFFER`` (1024),
``SSE_BENCH_KEEP_ALIVE`` (15), and ``SSE_BENCH_READY_DIR``: when set, each
worker creates the file ``<pid>`` there once its broadcaster runs, and
``<pid>.publisher`` when it starts publishing::

    SSE_BENCH_BACKEND=redis SSE_BENCH_REDIS_URL=redis://127.0.0.1:6379 \\
        hypercorn --worker-class trio --workers 2 --bind 127.0.0.1:8000 \\
        benchmarks/trio_sse_workers.py:app
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import coredis
import trio

import trio_sse
from trio_sse.redis import RedisBackend

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "peers"))
from _common import KEY, PublishSpec, Schedule, apply_gc_threshold, raise_nofile

BACKENDS = ("memory", "redis")


class WorkerApp:
    """One worker's application; its lifespan owns the broadcaster."""

    def __init__(self, environ: dict[str, str]) -> None:
        self.backend = environ.get("SSE_BENCH_BACKEND", "memory")
        if self.backend not in BACKENDS:
            raise SystemExit(f"SSE_BENCH_BACKEND must be one of {BACKENDS}")
        self.redis_url = environ.get("SSE_BENCH_REDIS_URL", "redis://127.0.0.1:6379")
        self.buffer = int(environ.get("SSE_BENCH_BUFFER", "1024"))
        self.config = trio_sse.SseConfig(
            keep_alive=float(environ.get("SSE_BENCH_KEEP_ALIVE", "15"))
        )
        ready = environ.get("SSE_BENCH_READY_DIR")
        self.ready_dir = Path(ready) if ready else None
        self.bc: trio_sse.Broadcaster[str, trio_sse.Event] | None = None

    def mark(self, suffix: str = "") -> None:
        if self.ready_dir is not None:
            (self.ready_dir / f"{os.getpid()}{suffix}").touch()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self.lifespan(receive, send)
        elif scope["type"] == "http":
            if self.bc is None:
                raise RuntimeError("the application runs inside its ASGI lifespan")
            await self.http(self.bc, scope, receive, send)

    async def lifespan(self, receive: Any, send: Any) -> None:
        await receive()  # lifespan.startup
        raise_nofile()
        apply_gc_threshold()
        if self.backend == "redis":
            client: coredis.Redis[Any] = coredis.Redis.from_url(self.redis_url)
            async with client:
                await client.ping()
                backend: RedisBackend[str, trio_sse.Event] = RedisBackend(client)
                await self.serve(receive, send, backend)
        else:
            await self.serve(receive, send, None)
        await send({"type": "lifespan.shutdown.complete"})

    async def serve(self, receive: Any, send: Any, backend: Any) -> None:
        async with trio_sse.Broadcaster(
            self.buffer, self.config, backend=backend
        ) as bc:
            self.bc = bc
            try:
                await send({"type": "lifespan.startup.complete"})
                self.mark()
                await receive()  # lifespan.shutdown
            finally:
                self.bc = None

    async def http(
        self,
        bc: trio_sse.Broadcaster[str, trio_sse.Event],
        scope: Any,
        receive: Any,
        send: Any,
    ) -> None:
        path = scope["path"]
        if path == "/sse":
            stream = bc.subscribe(KEY).on_lag(trio_sse.LagPolicy.SKIP)
            await bc.response(stream)(scope, receive, send)
        elif path == "/publish" and scope["method"] == "POST":
            spec = PublishSpec.from_query(scope["query_string"])
            if not spec.checkpoint or spec.publishers != 1:
                await respond(send, 400, b"one publisher, awaiting each publish\n")
                return
            await respond(send, 202, b"publishing\n")
            self.mark(".publisher")
            await publish_events(bc, spec)
        elif path == "/stats":
            count = bc.subscriber_count(KEY)
            await respond(
                send, 200, f"subscribers {count} pid {os.getpid()}\n".encode()
            )
        else:
            await respond(send, 404, b"not found\n")


async def publish_events(
    bc: trio_sse.Broadcaster[str, trio_sse.Event], spec: PublishSpec
) -> None:
    """Sleep until each event is due, then await ``bc.publish()``."""
    sched = Schedule(spec)
    while (delay := sched.delay()) is not None:
        await trio.sleep(delay)
        item = sched.take()
        if item is None:
            return
        await bc.publish(KEY, trio_sse.Event(item[1]))


async def respond(send: Any, status: int, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"text/plain")],
        }
    )
    await send({"type": "http.response.body", "body": body})


app = WorkerApp(dict(os.environ))
