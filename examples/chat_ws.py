"""The chat room over WebSocket: one connection both ways.

Run ``python examples/chat_ws.py`` and open http://127.0.0.1:8000/ in two
windows (``/?room=name`` picks a room).

The same rooms as ``chat.py`` (keys of one :class:`trio_sse.Broadcaster`,
100 events of history, ``presence`` events), but the page opens one
WebSocket per room: the server sends the room's events as text messages
holding SSE event blocks (:meth:`trio_sse.Broadcaster.websocket`), and the
page posts by sending ``{"user": ..., "text": ...}`` on the same socket,
which ``on_message`` publishes. When the connection drops, the page
reconnects with ``?lastEventId=`` and the history replays what it missed.
"""

from __future__ import annotations

import json
import logging
import re
import time
import urllib.parse
from collections.abc import AsyncIterator
from typing import Any

from _router import App, Receive, Request, Scope, Send, page, run

from trio_sse import Broadcaster, BroadcastStream, Event, SseConfig, last_event_id

MAX_TEXT = 500
MAX_NAME = 40
ROOM_SOCKET = re.compile(r"^/rooms/(?P<room>[^/]+)/ws$")

logger = logging.getLogger("chat_ws")


def make_app() -> Any:
    """The chat application: pages over http, rooms over WebSocket."""
    rooms: Broadcaster[str, Event] = Broadcaster(
        buffer=64, config=SseConfig(keep_alive=15.0, retry=1.0), history=100
    )
    http = App()
    http.state["rooms"] = rooms

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
                    yield (
                        event if event.id is not None else event.with_id(stream.last_id)
                    )
        finally:
            if rooms.subscriber_count(room):
                rooms.send(room, presence(room))

    def poster(room: str) -> Any:
        async def on_message(text: str) -> None:
            """Publish a chat message; ignore (and log) anything malformed."""
            try:
                message = json.loads(text)
                user = str(message.get("user", "")).strip()[:MAX_NAME] or "anonymous"
                body = str(message.get("text", "")).strip()
            except (ValueError, AttributeError):
                logger.info("ignoring a malformed message in %r", room)
                return
            if not body or len(body) > MAX_TEXT:
                logger.info("ignoring an empty or over-long message in %r", room)
                return
            item = {"user": user, "text": body, "time": round(time.time() * 1000)}
            await rooms.publish(room, Event.json(item, event="message"))

        return on_message

    @http.route("GET", "/")
    async def index(request: Request) -> Any:
        return page("chat_ws.html")

    async def socket(scope: Scope, receive: Receive, send: Send) -> None:
        match = ROOM_SOCKET.match(scope["path"])
        room = urllib.parse.unquote(match["room"]).strip() if match else ""
        if not room or len(room) > MAX_NAME:
            await receive()  # websocket.connect
            await send({"type": "websocket.close", "code": 1008})  # refused: 403
            return
        stream = rooms.subscribe(room, last_event_id=last_event_id(scope))
        response = rooms.websocket(with_presence(room, stream), on_message=poster(room))
        await response(scope, receive, send)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await socket(scope, receive, send)
        else:
            await http(scope, receive, send)

    app.state = http.state  # type: ignore[attr-defined]
    return app


app = make_app()

if __name__ == "__main__":
    run(app, "trio_sse chat over WebSocket")
