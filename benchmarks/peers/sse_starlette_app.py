"""sse-starlette peer: Starlette + EventSourceResponse, per-subscriber queues.

The fan-out is the one sse-starlette's users write: every ``/sse`` request
gets its own anyio memory object stream (anyio, so the same code runs on
asyncio and trio), the publisher loops over them with ``send_nowait``, and
each response encodes the ``ServerSentEvent`` it yields.

    python sse_starlette_app.py --server uvicorn|hypercorn-trio --port 8000
"""

from __future__ import annotations

import sys

import anyio
from _common import PublishSpec, Schedule, parse_args
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route


def make_app(buffer: int, keep_alive: float) -> Starlette:
    subscribers: set[anyio.abc.ObjectSendStream[ServerSentEvent]] = set()
    dropped = 0

    async def sse(request: Request) -> Response:
        tx, rx = anyio.create_memory_object_stream[ServerSentEvent](buffer)
        subscribers.add(tx)

        async def events():
            try:
                async with rx:
                    async for event in rx:
                        yield event
            finally:
                subscribers.discard(tx)

        return EventSourceResponse(events(), ping=keep_alive)

    async def publisher(sched: Schedule) -> None:
        nonlocal dropped
        checkpoint = sched.spec.checkpoint
        while (delay := sched.delay()) is not None:
            if checkpoint:
                await anyio.sleep(delay)  # asyncio.sleep / trio.sleep
            item = sched.take()
            if item is None:
                return
            seq, data = item
            event = ServerSentEvent(data=data, id=str(seq))
            for tx in list(subscribers):
                try:
                    tx.send_nowait(event)
                except anyio.WouldBlock:
                    dropped += 1
                except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                    subscribers.discard(tx)

    async def publish_events(spec: PublishSpec) -> None:
        sched = Schedule(spec)
        async with anyio.create_task_group() as tg:
            for _ in range(spec.publishers):
                tg.start_soon(publisher, sched)

    async def publish(request: Request) -> Response:
        spec = PublishSpec.from_query(request.url.query)
        return PlainTextResponse(
            "publishing\n",
            status_code=202,
            background=BackgroundTask(publish_events, spec),
        )

    async def stats(request: Request) -> Response:
        return PlainTextResponse(f"subscribers {len(subscribers)} dropped {dropped}\n")

    return Starlette(
        routes=[
            Route("/sse", sse),
            Route("/publish", publish, methods=["POST"]),
            Route("/stats", stats),
        ]
    )


def main() -> None:
    server = "uvicorn"
    if "--server" in sys.argv:
        i = sys.argv.index("--server")
        server = sys.argv[i + 1]
        del sys.argv[i : i + 2]
    args = parse_args(__doc__.splitlines()[0])
    app = make_app(args.buffer, args.keep_alive)
    if server == "uvicorn":
        import uvicorn

        uvicorn.run(
            app,
            host=args.host,
            port=args.port,
            loop="uvloop",
            http="httptools",
            access_log=False,
            log_level="warning",
            lifespan="off",
        )
    elif server == "hypercorn-trio":
        import trio
        from hypercorn.config import Config
        from hypercorn.trio import serve

        config = Config()
        config.bind = [f"{args.host}:{args.port}"]
        config.accesslog = None
        config.errorlog = "-"
        config.loglevel = "WARNING"
        trio.run(serve, app, config)
    else:
        raise SystemExit(f"unknown server {server!r}")


if __name__ == "__main__":
    main()
