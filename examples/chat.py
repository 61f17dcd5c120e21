"""The classic chat room: rooms are broadcaster keys, POST sends, SSE receives.

Run ``python examples/chat.py`` and open http://127.0.0.1:8000/ in two
windows (``/?room=name`` picks a room).

Each room is a key of one :class:`trio_sse.Broadcaster`; a message is one
:class:`trio_sse.Event`, encoded once however many people are in the room.
The broadcaster keeps the last 100 events per room, so a browser that loses
its connection reconnects with ``Last-Event-ID`` and gets what it missed. A
``presence`` event tells the room how many people are connected whenever
someone joins or leaves.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from _router import App, Request, json_response, page, response, run

from trio_sse import Broadcaster, BroadcastStream, Event, SseConfig, last_event_id

MAX_TEXT = 500
MAX_NAME = 40


def make_app() -> App:
    """The chat application."""
    rooms: Broadcaster[str, Event] = Broadcaster(
        buffer=64, config=SseConfig(keep_alive=15.0, retry=1.0), history=100
    )
    app = App()
    app.state["rooms"] = rooms

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
                    yield (
                        event if event.id is not None else event.with_id(stream.last_id)
                    )
        finally:
            if rooms.subscriber_count(room):
                rooms.send(room, presence(room))

    def room_name(request: Request) -> str:
        room = request.params["room"].strip()
        if not room or len(room) > MAX_NAME:
            raise ValueError("room names have 1 to 40 characters")
        return room

    @app.route("GET", "/")
    async def index(request: Request) -> Any:
        return page("chat.html")

    @app.route("GET", "/rooms/{room}/events")
    async def events(request: Request) -> Any:
        room = room_name(request)
        stream = rooms.subscribe(room, last_event_id=last_event_id(request.scope))
        return rooms.response(with_presence(room, stream))

    @app.route("POST", "/rooms/{room}/messages")
    async def post(request: Request) -> Any:
        room = room_name(request)
        form = await request.form()
        user = form.get("user", "").strip()[:MAX_NAME] or "anonymous"
        text = form.get("text", "").strip()
        if not text:
            return response("empty message", status=400)
        if len(text) > MAX_TEXT:
            return response(f"messages have at most {MAX_TEXT} characters", status=400)
        message = {"user": user, "text": text, "time": round(time.time() * 1000)}
        event_id = await rooms.publish(room, Event.json(message, event="message"))
        return json_response({"id": event_id}, status=201)

    return app


app = make_app()

if __name__ == "__main__":
    run(app, "trio_sse chat")
