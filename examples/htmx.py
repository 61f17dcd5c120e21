"""HTML over SSE: ``Event.html()`` fragments swapped in by htmx's SSE extension.

Run ``python examples/htmx.py`` and open http://127.0.0.1:8000/.

The page has no JavaScript of its own: ``hx-ext="sse"`` opens one
``EventSource`` and each ``sse-swap="name"`` element takes the HTML of the
events called ``name``. The server sends a ``clock`` fragment every second
and a ``message`` fragment for everything posted to the shout box (htmx
posts the form; a :class:`trio_sse.Broadcaster` fans the fragment out).
htmx and its SSE extension are vendored under ``static/``: no CDN.
"""

from __future__ import annotations

import datetime
import html
from typing import Any

import trio
from _router import App, Request, page, response, run

from trio_sse import Broadcaster, Event, Sender, SseConfig


def make_app(*, tick: float = 1.0) -> App:
    """The htmx application; *tick* is the period of the clock (seconds)."""
    shouts: Broadcaster[str, Event] = Broadcaster(
        buffer=32, config=SseConfig(keep_alive=15.0, retry=1.0)
    )
    app = App()
    app.state["shouts"] = shouts

    def clock() -> Event:
        now = datetime.datetime.now().strftime("%H:%M:%S")
        count = shouts.subscriber_count("shouts")
        return Event.html(
            f"<time>{now}</time> · {count} page{'s' if count != 1 else ''} open",
            event="clock",
        )

    async def feed(tx: Sender) -> None:
        """Clock ticks and shouts, interleaved on one stream."""
        async with shouts.subscribe("shouts") as stream, trio.open_nursery() as nursery:

            async def forward() -> None:
                async for event in stream:
                    await tx.send(event)

            nursery.start_soon(forward)
            while True:
                await tx.send(clock())
                await trio.sleep(tick)

    @app.route("GET", "/")
    async def index(request: Request) -> Any:
        return page("htmx.html")

    @app.route("GET", "/events")
    async def events(request: Request) -> Any:
        return shouts.channel(feed)

    @app.route("POST", "/shout")
    async def shout(request: Request) -> Any:
        form = await request.form()
        text = form.get("text", "").strip()[:200]
        if text:
            name = html.escape(form.get("name", "").strip()[:30] or "someone")
            stamp = datetime.datetime.now().strftime("%H:%M:%S")
            fragment = (
                f"<li><b>{name}</b> {html.escape(text)} <small>{stamp}</small></li>"
            )
            await shouts.publish("shouts", Event.html(fragment, event="message"))
        return response("", status=204)

    return app


app = make_app()

if __name__ == "__main__":
    run(app, "trio_sse htmx")
