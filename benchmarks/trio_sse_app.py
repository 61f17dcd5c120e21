"""trio_sse benchmark server: Broadcaster + bc.response + trio_sse.serve.

Same routes and event format as the peers in ``peers/``:

- ``GET /sse``: one subscriber of the ``bench`` key, with
  ``on_lag(LagPolicy.SKIP)``, streamed by the idiomatic response of the
  ``--variant``: ``response`` (the default) sends ``Event`` items and serves
  ``bc.response(stream)``; ``cast`` sends the data strings and serves
  ``bc.response(stream.cast_events(Event))``;
- ``POST /publish?n=&size=&rate=&publishers=&checkpoint=``: answers 202 at
  once, then publishes with ``bc.send`` from the request's task (and from
  ``publishers`` tasks of a nursery when more than one), see
  ``peers/_common.py``;
- ``GET /stats``: subscriber count.

trio_sse is imported from ``sys.path``: ``run.py`` puts the checkout it
belongs to (or the one given with ``--trio-sse-tree``) first.

    python trio_sse_app.py --port 8000 --buffer 1024 [--variant cast]
        [--gc-freeze always]
"""

from __future__ import annotations

import functools
import os
import sys
from typing import Any

import trio

import trio_sse

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "peers"))
from _common import KEY, PublishSpec, Schedule, parse_args

VARIANTS = ("response", "cast")
GC_FREEZE: dict[str, Any] = {"off": False, "on": True, "always": "always"}


def make_app(bc: trio_sse.Broadcaster[str, Any], variant: str) -> object:
    if variant not in VARIANTS:
        raise SystemExit(f"unknown variant {variant!r}, expected one of {VARIANTS}")
    cast = variant == "cast"

    async def publisher(sched: Schedule) -> None:
        checkpoint = sched.spec.checkpoint
        while (delay := sched.delay()) is not None:
            if checkpoint:
                await trio.sleep(delay)
            item = sched.take()
            if item is None:
                return
            _, data = item
            bc.send(KEY, data if cast else trio_sse.Event(data))

    async def publish_events(spec: PublishSpec) -> None:
        sched = Schedule(spec)
        if spec.publishers == 1:
            await publisher(sched)
            return
        async with trio.open_nursery() as nursery:
            for _ in range(spec.publishers):
                nursery.start_soon(publisher, sched)

    async def respond(send, status: int, body: bytes) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"text/plain")],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def app(scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        path = scope["path"]
        if path == "/sse":
            stream = bc.subscribe(KEY).on_lag(trio_sse.LagPolicy.SKIP)
            if cast:
                await bc.response(stream.cast_events(trio_sse.Event))(
                    scope, receive, send
                )
            else:
                await bc.response(stream)(scope, receive, send)
        elif path == "/publish" and scope["method"] == "POST":
            spec = PublishSpec.from_query(scope["query_string"])
            await respond(send, 202, b"publishing\n")
            await publish_events(spec)
        elif path == "/stats":
            count = bc.subscriber_count(KEY)
            await respond(send, 200, f"subscribers {count}\n".encode())
        else:
            await respond(send, 404, b"not found\n")

    return app


async def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    config = trio_sse.SseConfig(keep_alive=args.keep_alive)
    if args.write_timeout is not None:
        config = trio_sse.SseConfig(
            keep_alive=args.keep_alive, write_timeout=args.write_timeout or None
        )
    bc: trio_sse.Broadcaster[str, Any] = trio_sse.Broadcaster(
        buffer=args.buffer, config=config
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(
            functools.partial(
                trio_sse.serve,
                make_app(bc, args.variant),
                args.host,
                args.port,
                gc_freeze=GC_FREEZE[args.gc_freeze],
            )
        )


if __name__ == "__main__":
    trio.run(main)
