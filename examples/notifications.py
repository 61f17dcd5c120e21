"""Per-user notifications that survive a reload: ids and Last-Event-ID replay.

Run ``python examples/notifications.py`` and open
http://127.0.0.1:8000/?user=alice. A demo task notifies alice and bob every
few seconds; send your own with the form. Reload the page (or close it for a
while): it reconnects with the id of the last notification it saw and the
server replays everything it missed from its history, tagged "missed while
away".

Each user is a key of a :class:`trio_sse.Broadcaster` with ``history=200``.
The page remembers the last id in ``localStorage`` and passes it as the
``lastEventId`` query parameter (an ``EventSource`` cannot set headers on
its first request; :func:`trio_sse.last_event_id` reads either). When the
history no longer covers that id, the stream starts with a ``reset`` event so
the page knows it may have missed something.
"""

from __future__ import annotations

import itertools
import time
from typing import Any

import trio
from _router import App, Request, json_response, page, response, run

from trio_sse import Broadcaster, Event, SseConfig, chain, last_event_id, replay

DEMO_USERS = ("alice", "bob")
DEMO_MESSAGES = (
    ("build", "Build #{n} passed"),
    ("review", "Your review was requested on PR #{n}"),
    ("deploy", "Deploy {n} reached production"),
    ("mention", "You were mentioned in #general ({n})"),
)


def notification(kind: str, text: str) -> Event:
    payload = {"kind": kind, "text": text, "sent": round(time.time() * 1000)}
    return Event.json(payload, event="notification")


def make_app(*, demo_interval: float | None = 4.0) -> App:
    """The notifications application; ``demo_interval=None`` turns the demo off."""
    users: Broadcaster[str, Event] = Broadcaster(
        buffer=32, config=SseConfig(keep_alive=15.0, retry=1.0), history=200
    )
    app = App()
    app.state["users"] = users

    async def demo() -> None:
        for n in itertools.count(1):
            await trio.sleep(demo_interval or 0)
            kind, text = DEMO_MESSAGES[n % len(DEMO_MESSAGES)]
            for user in DEMO_USERS:
                await users.publish(user, notification(kind, text.format(n=n)))

    if demo_interval is not None:
        app.background(demo)

    @app.route("GET", "/")
    async def index(request: Request) -> Any:
        return page("notifications.html")

    @app.route("GET", "/users/{user}/events")
    async def events(request: Request) -> Any:
        last_id = last_event_id(request.scope)
        stream = users.subscribe(request.params["user"], last_event_id=last_id)
        if last_id is not None and not stream.replay_complete:
            # The history does not reach back to last_id: say so first.
            reset = Event.json({"reason": "history expired"}, event="reset")
            return users.response(chain(replay([reset]), stream))
        return users.response(stream)

    @app.route("POST", "/users/{user}/notify")
    async def notify(request: Request) -> Any:
        text = (await request.form()).get("text", "").strip()
        if not text or len(text) > 300:
            return response("text must have 1 to 300 characters", status=400)
        event_id = await users.publish(
            request.params["user"], notification("note", text)
        )
        return json_response({"id": event_id}, status=201)

    return app


app = make_app()

if __name__ == "__main__":
    run(app, "trio_sse notifications")
