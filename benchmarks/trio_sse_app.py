"""trio_sse benchmark server: Broadcaster + bc.response + trio_sse.serve.

Same routes and event format as the peers in ``peers/``:

- ``GET /sse``: one subscriber of the ``bench`` key, streamed by
  ``bc.response(stream)``;
- ``POST /publish?n=&size=&rate=``: answers 202 at once, then publishes
  ``n`` events of ``size`` bytes of data with ``bc.send`` (``rate`` events/s,
  or as fast as possible when 0);
- ``GET /stats``: subscriber count.

    python trio_sse_app.py --port 8000 --buffer 1024
"""

from __future__ import annotations

import os
import sys
import time

import trio

import trio_sse

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "peers"))
from _common import KEY, PublishSpec, parse_args, payload


def make_app(bc: trio_sse.Broadcaster) -> object:
    async def publish_events(spec: PublishSpec) -> None:
        start = time.monotonic_ns()
        for seq in range(spec.n):
            scheduled, delay = spec.delay_until(start, seq)
            if delay > 0:
                await trio.sleep(delay)
            data = payload(seq, scheduled, time.monotonic_ns(), spec.size)
            bc.send(KEY, trio_sse.Event(data))

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
    bc: trio_sse.Broadcaster[str, trio_sse.Event] = trio_sse.Broadcaster(
        buffer=args.buffer, config=config
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(trio_sse.serve, make_app(bc), args.host, args.port)


if __name__ == "__main__":
    trio.run(main)
