"""Reference floor: the least an SSE response needs on Hypercorn's trio worker.

A raw ASGI app, no library: each ``/sse`` connection gets a trio memory
channel of encoded events; the response task writes whatever is ready as one
body chunk (a keep-alive comment after ``--keep-alive`` seconds without an
event) while one more task watches ``receive()`` for the disconnect, the only
way Hypercorn tells an app that the client left. No write timeout, no
shutdown handling, no ids, no lag policy. What trio_sse costs beyond this is
its own; what this costs is Hypercorn's.

    python hypercorn_bare.py --port 8000
"""

from __future__ import annotations

import trio
from _common import PublishSpec, Schedule, parse_args
from hypercorn.config import Config
from hypercorn.trio import serve


def make_app(buffer: int, keep_alive: float):
    subscribers: set[trio.MemorySendChannel[bytes]] = set()
    dropped = 0

    async def publisher(sched: Schedule) -> None:
        nonlocal dropped
        checkpoint = sched.spec.checkpoint
        while (delay := sched.delay()) is not None:
            if checkpoint:
                await trio.sleep(delay)
            item = sched.take()
            if item is None:
                return
            seq, data = item
            chunk = f"id: {seq}\ndata: {data}\n\n".encode()
            for tx in subscribers:
                try:
                    tx.send_nowait(chunk)
                except trio.WouldBlock:
                    dropped += 1

    async def publish_events(spec: PublishSpec) -> None:
        sched = Schedule(spec)
        async with trio.open_nursery() as nursery:
            for _ in range(spec.publishers):
                nursery.start_soon(publisher, sched)

    async def stream(receive, send) -> None:
        tx, rx = trio.open_memory_channel[bytes](buffer)
        subscribers.add(tx)
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [
                        (b"content-type", b"text/event-stream; charset=utf-8"),
                        (b"cache-control", b"no-cache"),
                    ],
                }
            )

            async def watch(cancel_scope: trio.CancelScope) -> None:
                while (await receive())["type"] != "http.disconnect":
                    pass
                cancel_scope.cancel()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(watch, nursery.cancel_scope)
                while True:
                    parts = [b": keep-alive\n\n"]
                    with trio.move_on_after(keep_alive):
                        parts = [await rx.receive()]
                        try:
                            while True:
                                parts.append(rx.receive_nowait())
                        except trio.WouldBlock:
                            pass
                    body = b"".join(parts)
                    await send(
                        {"type": "http.response.body", "body": body, "more_body": True}
                    )
        finally:
            subscribers.discard(tx)

    async def app(scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                await send({"type": message["type"] + ".complete"})
                if message["type"] == "lifespan.shutdown":
                    return
        if scope["path"] == "/sse":
            await stream(receive, send)
        elif scope["path"] == "/publish":
            await send({"type": "http.response.start", "status": 202, "headers": []})
            await send({"type": "http.response.body", "body": b"publishing\n"})
            await publish_events(PublishSpec.from_query(scope["query_string"]))

    return app


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    config = Config()
    config.bind = [f"{args.host}:{args.port}"]
    config.accesslog = None
    config.loglevel = "WARNING"
    trio.run(serve, make_app(args.buffer, args.keep_alive), config)


if __name__ == "__main__":
    main()
