"""The chat room on Quart-trio, served by Hypercorn's trio worker.

Run ``python examples/quart_chat.py`` and open http://127.0.0.1:8000/ in two
windows (``/?room=name`` picks a room).

Rooms are keys of one :class:`trio_sse.Broadcaster`; ``POST
/rooms/<room>/messages`` publishes, ``GET /rooms/<room>/events`` streams
through :class:`trio_sse.quart.EventSourceResponse` (keep-alive, disconnect,
write timeout and graceful shutdown included). The broadcaster keeps the
last 100 events per room, so a browser that reconnects with
``Last-Event-ID`` gets what it missed. A ``presence`` event counts who is in
the room.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import trio
from quart import abort, request
from quart_trio import QuartTrio

import trio_sse
from trio_sse import Broadcaster, BroadcastStream, Event, SseConfig
from trio_sse.quart import EventSourceResponse, last_event_id

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

PAGE = Path(__file__).resolve().parent / "static" / "chat.html"
MAX_TEXT = 500
MAX_NAME = 40


def room_name(room: str) -> str:
    """A path parameter checked as a room name (400 otherwise)."""
    room = room.strip()
    if not room or len(room) > MAX_NAME:
        abort(400, f"room names have 1 to {MAX_NAME} characters")
    return room


def make_app() -> QuartTrio:
    """The chat application."""
    rooms: Broadcaster[str, Event] = Broadcaster(
        buffer=64, config=SseConfig(keep_alive=15.0, retry=1.0), history=100
    )
    app = QuartTrio(__name__)
    app.config["rooms"] = rooms

    def presence(room: str) -> Event:
        return Event.json({"online": rooms.subscriber_count(room)}, event="presence")

    async def with_presence(
        room: str, stream: BroadcastStream[Event]
    ) -> AsyncIterator[Event]:
        """The room's events; announce arrivals and departures to the room."""
        try:
            async with stream:
                rooms.send(room, presence(room))
                async for event in stream:
                    # Items keep the broadcaster's id through this generator.
                    yield event if event.id else event.with_id(stream.last_id or "")
        finally:
            if rooms.subscriber_count(room):
                rooms.send(room, presence(room))

    @app.get("/")
    async def index() -> Any:
        return PAGE.read_text(encoding="utf-8")

    @app.get("/rooms/<room>/events")
    async def events(room: str) -> EventSourceResponse:
        room = room_name(room)
        stream = rooms.subscribe(room, last_event_id=last_event_id())
        return EventSourceResponse(rooms.response(with_presence(room, stream)))

    @app.post("/rooms/<room>/messages")
    async def post(room: str) -> Any:
        room = room_name(room)
        fields = await request.form
        user = fields.get("user", "").strip()[:MAX_NAME] or "anonymous"
        text = fields.get("text", "").strip()
        if not text:
            abort(400, "empty message")
        if len(text) > MAX_TEXT:
            abort(400, f"messages have at most {MAX_TEXT} characters")
        message = {"user": user, "text": text, "time": round(time.time() * 1000)}
        event_id = await rooms.publish(room, Event.json(message, event="message"))
        return {"id": event_id}, 201

    return app


app = make_app()


async def main(host: str, port: int) -> None:
    async with trio.open_nursery() as nursery:
        urls = await nursery.start(trio_sse.serve, app, host, port)
        print(f"trio_sse chat on Quart-trio: open {urls[0]}/ (Ctrl+C to stop)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="trio_sse chat on Quart-trio")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    try:
        trio.run(main, args.host, args.port)
    except BaseException as exc:
        # Ctrl+C shut the server down gracefully; it surfaces here, maybe
        # inside an exception group.
        if not isinstance(exc, BaseExceptionGroup):
            exc = BaseExceptionGroup("", [exc])
        if exc.split(KeyboardInterrupt)[1] is not None:
            raise
        print("stopped")
