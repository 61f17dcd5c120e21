"""The chat room over Redis: run several server processes, talk across them.

Start Redis, then two Hypercorn-trio worker processes::

    redis-server
    hypercorn --worker-class trio --workers 2 --bind 127.0.0.1:8000 \\
        examples.redis_chat:app

(or ``python examples/redis_chat.py`` for one process). Open
http://127.0.0.1:8000/ in two windows: whichever process serves a window, a
message posted in one appears in the other, because each room is a Redis
Stream that every process reads (``REDIS_URL`` picks the server, default
``redis://127.0.0.1:6379``). A browser that reconnects, to the same process
or another, replays what it missed from the stream with ``Last-Event-ID``.

When Redis cannot be reached the server refuses to start and says so.
"""

from __future__ import annotations

import os
import time
from typing import Any

import coredis
import coredis.exceptions
import trio

try:  # imported as examples.redis_chat (hypercorn) or run as a script
    from ._router import App, Receive, Request, Scope, Send, json_response, page, run
    from ._router import response as text_response
except ImportError:
    from _router import App, Receive, Request, Scope, Send, json_response, page, run
    from _router import response as text_response

from trio_sse import Broadcaster, Event, SseConfig, last_event_id
from trio_sse.redis import RedisBackend

MAX_TEXT = 500
MAX_NAME = 40
DEFAULT_URL = "redis://127.0.0.1:6379"


class RedisChat:
    """The chat application; the lifespan owns the Redis client and broadcaster."""

    def __init__(self, redis_url: str | None = None) -> None:
        self.redis_url = redis_url or os.environ.get("REDIS_URL", DEFAULT_URL)
        self.rooms: Broadcaster[str, Event] | None = None
        self.app = App()
        self.app.route("GET", "/")(self.index)
        self.app.route("GET", "/rooms/{room}/events")(self.events)
        self.app.route("POST", "/rooms/{room}/messages")(self.post)

    def broadcaster(self) -> Broadcaster[str, Event]:
        if self.rooms is None:
            raise RuntimeError("the chat runs inside its ASGI lifespan")
        return self.rooms

    @staticmethod
    def room_name(request: Request) -> str:
        room = request.params["room"].strip()
        if not room or len(room) > MAX_NAME:
            raise ValueError("room names have 1 to 40 characters")
        return room

    async def index(self, request: Request) -> Any:
        return page("chat.html")

    async def events(self, request: Request) -> Any:
        rooms = self.broadcaster()
        room = self.room_name(request)
        stream = rooms.subscribe(room, last_event_id=last_event_id(request.scope))
        return rooms.response(stream)

    async def post(self, request: Request) -> Any:
        room = self.room_name(request)
        form = await request.form()
        user = form.get("user", "").strip()[:MAX_NAME] or "anonymous"
        text = form.get("text", "").strip()
        if not text:
            return text_response("empty message", status=400)
        if len(text) > MAX_TEXT:
            return text_response(f"at most {MAX_TEXT} characters", status=400)
        message = {"user": user, "text": text, "time": round(time.time() * 1000)}
        event = Event.json(message, event="message")
        event_id = await self.broadcaster().publish(room, event)
        return json_response({"id": event_id}, status=201)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.lifespan(receive, send)
        else:
            await self.app(scope, receive, send)

    async def lifespan(self, receive: Receive, send: Send) -> None:
        await receive()  # lifespan.startup
        client: coredis.Redis[Any] = coredis.Redis.from_url(self.redis_url)
        async with client:
            try:
                with trio.fail_after(3):
                    await client.ping()
            except (coredis.exceptions.RedisError, OSError, trio.TooSlowError) as exc:
                message = (
                    f"cannot reach Redis at {self.redis_url} ({exc or 'timed out'}): "
                    "start one with 'redis-server', or set REDIS_URL"
                )
                print(message, flush=True)
                await send({"type": "lifespan.startup.failed", "message": message})
                return
            backend: RedisBackend[str, Event] = RedisBackend(client, maxlen=1000)
            config = SseConfig(keep_alive=15.0, retry=1.0)
            async with Broadcaster(buffer=64, config=config, backend=backend) as rooms:
                self.rooms = rooms
                try:
                    await send({"type": "lifespan.startup.complete"})
                    await receive()  # lifespan.shutdown
                finally:
                    self.rooms = None
        await send({"type": "lifespan.shutdown.complete"})


app = RedisChat()

if __name__ == "__main__":
    run(app, "trio_sse chat over Redis")
