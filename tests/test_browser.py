"""A real browser's EventSource reads a trio_sse server.

Headless Chromium, driven by playwright-core from npm (``tests/browser``),
loads a page from a real :func:`trio_sse.serve` on 127.0.0.1. The page's
``EventSource`` must receive named events and JSON, reconnect with
``Last-Event-ID`` after the server ends the stream (the
:class:`~trio_sse.Broadcaster` replays what was published meanwhile), and
wait the server's short ``retry:`` rather than its 3 s default.

Needs ``apt-get install -y chromium`` and ``npm ci --prefix tests/browser``.
Without them the test skips, except when ``CI=true``, where it fails.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
from helpers import serve_app

from trio_sse import (
    Broadcaster,
    BroadcastStream,
    Event,
    SseConfig,
    last_event_id,
)

pytestmark = pytest.mark.browser

HERE = Path(__file__).parent / "browser"
PAGE = HERE / "page.html"
DRIVER = HERE / "driver.mjs"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
LIMIT = 90  # seconds: launching a browser on a busy machine is slow
RETRY = 0.2  # the reconnection time the server asks for
FIRST_STREAM = 3  # events the first response carries before the server ends it

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

ITEMS = [
    Event("hello, browser", event="greeting"),
    Event.json({"n": 2, "text": "ünïcode ✓"}),
    Event("line one\nline two", event="poem"),
    # Published while the browser waits to reconnect: replayed from history.
    Event.json({"n": 4}),
    Event.json({"n": 5}),
    # Published live on the second connection; the page closes on it.
    Event.json({"n": 6, "last": True}, event="done"),
]


def missing_requirements() -> list[str]:
    missing = []
    if shutil.which("node") is None:
        missing.append("node (Node.js 18 or later)")
    if not os.access(CHROMIUM, os.X_OK):
        missing.append(f"{CHROMIUM} (apt-get install -y chromium)")
    if not (HERE / "node_modules" / "playwright-core").is_dir():
        missing.append("playwright-core (npm ci --prefix tests/browser)")
    return missing


@pytest.fixture
def browser_ready() -> None:
    missing = missing_requirements()
    if missing:
        message = "browser test needs: " + "; ".join(missing)
        if os.environ.get("CI") == "true":
            pytest.fail(message + " (CI=true: not skipping)")
        pytest.skip(message)


@attrs.define(eq=False)
class BrowserApp:
    """``/``: the page; ``/stream``: a Broadcaster key resumed by Last-Event-ID.

    The first ``/stream`` response ends after FIRST_STREAM events.
    """

    broadcaster: Broadcaster[str, Event] = attrs.Factory(
        lambda: Broadcaster(history=100, config=SseConfig(retry=RETRY))
    )
    first_subscribed: trio.Event = attrs.Factory(trio.Event)
    first_ended: trio.Event = attrs.Factory(trio.Event)
    second_subscribed: trio.Event = attrs.Factory(trio.Event)
    #: (arrival time, Last-Event-ID) of each /stream request.
    streams: list[tuple[float, str | None]] = attrs.Factory(list)
    first_ended_at: float | None = None

    async def __call__(
        self, scope: dict[str, Any], receive: Receive, send: Send
    ) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] == "/":
            await self._page(send)
        elif scope["path"] == "/stream":
            await self._stream(scope, receive, send)
        else:
            await send({"type": "http.response.start", "status": 404, "headers": []})
            await send({"type": "http.response.body", "body": b""})

    async def _page(self, send: Send) -> None:
        body = PAGE.read_bytes()
        headers = [
            (b"content-type", b"text/html; charset=utf-8"),
            (b"cache-control", b"no-store"),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _stream(
        self, scope: dict[str, Any], receive: Receive, send: Send
    ) -> None:
        resume = last_event_id(scope)
        first = not self.streams
        self.streams.append((trio.current_time(), resume))
        stream = self.broadcaster.subscribe("page", last_event_id=resume)
        if first:
            self.first_subscribed.set()
            response = self.broadcaster.response(self._first(stream))
        else:
            self.second_subscribed.set()
            response = self.broadcaster.response(stream)
        await response(scope, receive, send)

    async def _first(self, stream: BroadcastStream[Event]) -> AsyncIterator[Event]:
        try:
            async with stream:
                for _ in range(FIRST_STREAM):
                    event = await stream.__anext__()
                    yield event.with_id(stream.last_id or "")
        finally:
            self.first_ended_at = trio.current_time()
            self.first_ended.set()


async def publish(app: BrowserApp, ids: list[str]) -> None:
    bc = app.broadcaster
    await app.first_subscribed.wait()
    for item in ITEMS[:FIRST_STREAM]:
        ids.append(await bc.publish("page", item))
    await app.first_ended.wait()
    for item in ITEMS[FIRST_STREAM:-1]:
        ids.append(await bc.publish("page", item))
    await app.second_subscribed.wait()
    ids.append(await bc.publish("page", ITEMS[-1]))


async def run_driver(url: str) -> dict[str, Any]:
    env = dict(os.environ, CHROMIUM=CHROMIUM)
    result = await trio.run_process(
        ["node", str(DRIVER), url, str((LIMIT - 10) * 1000)],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        env=env,
    )
    lines = result.stdout.decode().strip().splitlines()
    assert lines, f"driver printed nothing; stderr:\n{result.stderr.decode()}"
    report: dict[str, Any] = json.loads(lines[-1])
    assert report["ok"], report.get("error")
    assert result.returncode == 0
    return report


async def test_chromium_eventsource(browser_ready: None) -> None:
    app = BrowserApp()
    ids: list[str] = []
    with trio.fail_after(LIMIT):
        async with serve_app(app) as url, trio.open_nursery() as nursery:
            nursery.start_soon(publish, app, ids)
            report = await run_driver(url + "/")
    verdict = report["verdict"]
    events = verdict["events"]

    # Named events, JSON and multi-line data, with the server's ids.
    assert [(e["type"], e["data"]) for e in events] == [
        (item.event or "message", item.data) for item in ITEMS
    ]
    assert [e["lastEventId"] for e in events] == ids
    assert events[1]["json"] == {"n": 2, "text": "ünïcode ✓"}
    assert events[-1]["json"] == {"n": 6, "last": True}

    # One reconnection, carrying the id of the last event of the first stream.
    assert [resume for _, resume in app.streams] == [None, ids[FIRST_STREAM - 1]]
    assert len(verdict["opens"]) == 2
    assert len(verdict["errors"]) == 1
    assert verdict["errors"][0]["readyState"] == 0  # CONNECTING: it retries
    assert verdict["readyState"] == 2  # CLOSED by the page

    # retry: honoured, on both sides of the wire: at least the 200 ms asked
    # for, well below the 3 s a browser waits by default.
    assert app.first_ended_at is not None
    server_gap = app.streams[1][0] - app.first_ended_at
    browser_gap = (verdict["opens"][1] - verdict["errors"][0]["at"]) / 1000
    print(
        f"\n{verdict['browserVersion']}: reconnect gap {server_gap:.3f} s at the "
        f"server, {browser_gap:.3f} s in the page (retry: {RETRY} s)"
    )
    assert RETRY <= server_gap < 2.0, server_gap
    assert RETRY * 0.9 <= browser_gap < 2.0, browser_gap


# -- the dashboard example at a phone's and a desktop's width ------------------------

LAYOUT = HERE / "layout.mjs"
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


async def dashboard_layout(url: str, width: int, height: int) -> dict[str, Any]:
    """The dashboard's layout in Chromium at *width* × *height*, once drawn."""
    env = dict(os.environ, CHROMIUM=CHROMIUM)
    result = await trio.run_process(
        [
            "node",
            str(LAYOUT),
            url,
            str(width),
            str(height),
            "#c-cpu polyline",  # the first sample is drawn
            str((LIMIT - 10) * 1000),
        ],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        env=env,
    )
    lines = result.stdout.decode().strip().splitlines()
    assert lines, f"layout.mjs printed nothing; stderr:\n{result.stderr.decode()}"
    report: dict[str, Any] = json.loads(lines[-1])
    assert report["ok"], report.get("error")
    layout: dict[str, Any] = report["layout"]
    return layout


def rows(boxes: list[dict[str, Any]]) -> list[int]:
    """How many boxes sit on each row, top to bottom."""
    tops: dict[int, int] = {}
    for box in boxes:
        top = round(box["top"])
        tops[top] = tops.get(top, 0) + 1
    return [tops[top] for top in sorted(tops)]


@pytest.mark.parametrize(
    ("width", "height", "charts_per_row"),
    [(375, 740, [1, 1, 1, 1]), (1400, 900, [2, 2])],
)
async def test_dashboard_fits_a_phone_and_a_desktop(
    browser_ready: None,
    monkeypatch: pytest.MonkeyPatch,
    width: int,
    height: int,
    charts_per_row: list[int],
) -> None:
    monkeypatch.syspath_prepend(str(EXAMPLES))
    spec = importlib.util.spec_from_file_location(
        "example_dashboard_layout", EXAMPLES / "dashboard.py"
    )
    assert spec is not None and spec.loader is not None
    dashboard = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(dashboard)
    app = dashboard.make_app(interval=0.1)
    with trio.fail_after(LIMIT):
        async with serve_app(app) as url:
            layout = await dashboard_layout(url + "/", width, height)
    # Nothing scrolls sideways, and no chart or card is cut off.
    assert layout["innerWidth"] == width
    assert layout["scrollWidth"] <= width, layout
    charts = [box for box in layout["boxes"] if box["name"] == "chart"]
    cards = [box for box in layout["boxes"] if box["name"] == "card"]
    assert len(charts) == 4 and len(cards) == 12
    for box in charts + cards:
        assert box["left"] >= 0 and box["right"] <= width, box
    # Charts fill their rows: never a lone chart beside an empty space.
    assert rows(charts) == charts_per_row
    assert len({round(box["width"]) for box in charts}) == 1
