"""aiohttp-sse peer: aiohttp (uvloop) + sse_response, per-subscriber queues.

Every ``/sse`` request gets an ``asyncio.Queue``; the publisher loops over
them with ``put_nowait``; each response encodes and sends what it takes.

    python aiohttp_sse_app.py --port 8000
"""

from __future__ import annotations

import asyncio

import uvloop
from _common import PublishSpec, Schedule, parse_args
from aiohttp import web
from aiohttp_sse import sse_response


def make_app(buffer: int, keep_alive: float) -> web.Application:
    subscribers: set[asyncio.Queue[tuple[str, str]]] = set()
    dropped = 0
    tasks: set[asyncio.Task[None]] = set()

    async def sse(request: web.Request) -> web.StreamResponse:
        queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue(buffer)
        subscribers.add(queue)
        try:
            async with sse_response(request, ping_interval=keep_alive) as resp:
                while resp.is_connected():
                    data, id_ = await queue.get()
                    await resp.send(data, id=id_)
        finally:
            subscribers.discard(queue)
        return resp

    async def publisher(sched: Schedule) -> None:
        nonlocal dropped
        checkpoint = sched.spec.checkpoint
        while (delay := sched.delay()) is not None:
            if checkpoint:
                await asyncio.sleep(delay)
            item = sched.take()
            if item is None:
                return
            seq, data = item
            message = (data, str(seq))
            for queue in list(subscribers):
                try:
                    queue.put_nowait(message)
                except asyncio.QueueFull:
                    dropped += 1

    async def publish_events(spec: PublishSpec) -> None:
        sched = Schedule(spec)
        async with asyncio.TaskGroup() as tg:
            for _ in range(spec.publishers):
                tg.create_task(publisher(sched))

    async def publish(request: web.Request) -> web.Response:
        spec = PublishSpec.from_query(request.query_string)
        task = asyncio.get_running_loop().create_task(publish_events(spec))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        return web.Response(status=202, text="publishing\n")

    async def stats(request: web.Request) -> web.Response:
        return web.Response(text=f"subscribers {len(subscribers)} dropped {dropped}\n")

    app = web.Application()
    app.router.add_get("/sse", sse)
    app.router.add_post("/publish", publish)
    app.router.add_get("/stats", stats)
    return app


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    uvloop.install()
    web.run_app(
        make_app(args.buffer, args.keep_alive),
        host=args.host,
        port=args.port,
        access_log=None,
        print=None,
        backlog=1024,
        shutdown_timeout=1,
    )


if __name__ == "__main__":
    main()
