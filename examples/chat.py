"""The classic chat room: rooms are broadcaster keys, POST sends, SSE receives.

Run ``python examples/chat.py`` and open http://127.0.0.1:8000/ in two
windows (``/?room=name`` picks a room).

Each room is a key of one :class:`trio_sse.Broadcaster`; a message is one
:class:`trio_sse.Event`, encoded once however many people are in the room.

- **First load**: a browser that opens the room gets its recent messages
  first (a snapshot), then live ones.
- **Reconnect**: the broadcaster keeps the last 100 messages per room, so a
  browser that loses its connection reconnects with ``Last-Event-ID`` and
  gets what it missed. A member too slow to keep up is ended
  (:attr:`~trio_sse.LagPolicy.END`) and catches up the same way.
- **Presence** ("3 online") is a latest-value update on a side channel: a
  second broadcaster whose subscribers hold one item and skip to the newest
  (:attr:`~trio_sse.LagPolicy.SKIP`). Joins and leaves, however many, never
  queue up in front of messages and never make a member lag.
- **Empty rooms are forgotten** a minute after their last member left
  (history, snapshot and ids' bookkeeping), so made-up room names cost
  nothing for long. The clean-up runs in the application's lifespan.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

import trio
from _router import App, Request, json_response, page, response, run

from trio_sse import (
    Broadcaster,
    BroadcastStream,
    Event,
    LagPolicy,
    Sender,
    SseConfig,
    last_event_id,
)

MAX_TEXT = 500
MAX_NAME = 40
HISTORY = 100  # messages kept per room for reconnects
SNAPSHOT = 50  # messages a first load starts with
FORGET_AFTER = 60.0  # seconds an empty room is kept for reconnects


class _EmptyRooms:
    """Rooms without members, oldest first, for the task that forgets them."""

    def __init__(self) -> None:
        self.since: dict[str, float] = {}
        self.changed = trio.Event()

    def add(self, room: str) -> None:
        self.since.pop(room, None)
        self.since[room] = trio.current_time()
        self.changed.set()

    def discard(self, room: str) -> None:
        self.since.pop(room, None)


def make_app(forget_after: float = FORGET_AFTER) -> App:
    """The chat application."""
    config = SseConfig(keep_alive=15.0, retry=1.0)
    messages: Broadcaster[str, Event] = Broadcaster(
        buffer=64, config=config, history=HISTORY
    )
    presence: Broadcaster[str, Event] = Broadcaster(buffer=1, config=config)
    recent: dict[str, deque[Event]] = {}
    empty = _EmptyRooms()
    app = App()
    app.state.update(rooms=messages, presence=presence, recent=recent)

    def announce(room: str) -> None:
        online = messages.subscriber_count(room)
        presence.send(room, Event.json({"online": online}, event="presence"))

    def forget(room: str) -> None:
        messages.remove(room)
        presence.remove(room)
        recent.pop(room, None)

    @app.background
    async def forget_empty_rooms() -> None:
        while True:
            if not empty.since:
                empty.changed = trio.Event()
                await empty.changed.wait()
                continue
            room, since = next(iter(empty.since.items()))
            await trio.sleep_until(since + forget_after)
            if empty.since.get(room) == since:
                del empty.since[room]
                forget(room)

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
        resume = last_event_id(request.scope)
        # No checkpoint from here to the end of the handler: nothing is
        # published between the snapshot and the subscription.
        side = presence.subscribe(room).on_lag(LagPolicy.SKIP)
        live = messages.subscribe(room, last_event_id=resume).on_lag(LagPolicy.END)
        snapshot = [] if resume else list(recent.get(room, ()))
        empty.discard(room)
        announce(room)

        async def member(tx: Sender) -> None:
            try:
                async with side, live, trio.open_nursery() as nursery:
                    nursery.start_soon(forward_presence, side, tx)
                    for event in snapshot:
                        await tx.send(event)
                    await forward_messages(live, tx)
                    nursery.cancel_scope.cancel()
            finally:
                if messages.subscriber_count(room):
                    announce(room)
                else:
                    empty.add(room)

        return messages.channel(member)

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
        event = Event.json(message, event="message")
        event_id = await messages.publish(room, event)
        recent.setdefault(room, deque(maxlen=SNAPSHOT)).append(event.with_id(event_id))
        if not messages.subscriber_count(room) and room not in empty.since:
            empty.add(room)  # a message to an empty room is forgotten with it
        return json_response({"id": event_id}, status=201)

    return app


async def forward_messages(stream: BroadcastStream[Event], tx: Sender) -> None:
    """Send the room's messages, each with the id the broadcaster gave it."""
    async for event in stream:
        await tx.send(event if event.id is not None else event.with_id(stream.last_id))


async def forward_presence(stream: BroadcastStream[Event], tx: Sender) -> None:
    """Send the newest presence count (older ones were skipped), without an id.

    A browser resumes from the id of the last event it got: presence ids come
    from another broadcaster, which the messages' replay would not know.
    """
    async for event in stream:
        await tx.send(event.with_id(None))


app = make_app()

if __name__ == "__main__":
    run(app, "trio_sse chat")
