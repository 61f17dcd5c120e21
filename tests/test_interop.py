"""Third-party SSE clients read a trio_sse server correctly.

Neither client was written here: httpx-sse (async, run under trio) and
sseclient-py (sync, fed by the standard library's ``urllib``, run in a
thread). Both read a real :func:`trio_sse.serve` on 127.0.0.1 and must see
the same named events, ids, multi-line data and ``retry`` values, and a
``Last-Event-ID`` they send must resume a :class:`~trio_sse.Broadcaster`
stream where they left off.
"""

from __future__ import annotations

import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import attrs
import httpx
import httpx_sse
import pytest
import sseclient
import trio
from helpers import serve_app

from trio_sse import Broadcaster, Event, Sender, SseConfig, last_event_id, sse_channel

LIMIT = 10  # seconds any test may take
SOCKET_TIMEOUT = 5.0  # bounds each blocking read of the sync client

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


@attrs.frozen
class Seen:
    """What a client reports of one event: (type, data, id, retry ms)."""

    type: str
    data: str
    id: str | None
    retry: int | None


EVENTS = [
    Event("hello", event="greeting", id="1"),
    Event.json({"n": 2, "text": "ünïcode ✓"}, id="2"),
    Event("line one\nline two\r\n\nline four", event="poem", id="3"),
    Event("slow down", id="4", retry=0.25),
    Event("", event="empty", id="5"),
    Event("colons: a:b  and  spaces ", id="6"),
]

EXPECTED = [
    Seen("greeting", "hello", "1", None),
    Seen("message", '{"n":2,"text":"ünïcode ✓"}', "2", None),
    Seen("poem", "line one\nline two\n\nline four", "3", None),
    Seen("message", "slow down", "4", 250),
    Seen("empty", "", "5", None),
    Seen("message", "colons: a:b  and  spaces ", "6", None),
]


async def send_events(tx: Sender) -> None:
    for event in EVENTS:
        await tx.send(event)


@attrs.define(eq=False)
class App:
    """``/events``: the fixed EVENTS, then the stream ends.
    ``/live``: a Broadcaster subscription that resumes from Last-Event-ID.
    """

    broadcaster: Broadcaster[str, str] = attrs.Factory(
        lambda: Broadcaster(history=100, config=SseConfig(retry=0.5))
    )
    subscribed: trio.Event = attrs.Factory(trio.Event)
    #: The Last-Event-ID each /live request carried.
    resumed_from: list[str | None] = attrs.Factory(list)

    async def __call__(
        self, scope: dict[str, Any], receive: Receive, send: Send
    ) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] == "/events":
            response = sse_channel(send_events, SseConfig(retry=1.5))
        else:
            resume = last_event_id(scope)
            self.resumed_from.append(resume)
            stream = self.broadcaster.subscribe("room", last_event_id=resume)
            self.subscribed.set()
            response = self.broadcaster.response(stream)
        await response(scope, receive, send)


@asynccontextmanager
async def running() -> AsyncIterator[tuple[App, str]]:
    app = App()
    async with serve_app(app) as url:
        yield app, url


# -- httpx-sse ---------------------------------------------------------------


async def read_with_httpx_sse(
    url: str, headers: dict[str, str] | None = None
) -> list[httpx_sse.ServerSentEvent]:
    async with (
        httpx.AsyncClient() as client,
        httpx_sse.aconnect_sse(
            client, "GET", url, headers=dict(headers or {})
        ) as source,
    ):
        source.response.raise_for_status()
        assert source.response.headers["content-type"].startswith("text/event-stream")
        # Read to the end of the stream: the server closes it.
        return [sse async for sse in source.aiter_sse()]


async def test_httpx_sse_reads_events_ids_multiline_and_retry() -> None:
    with trio.fail_after(LIMIT):
        async with running() as (_, url):
            received = await read_with_httpx_sse(url + "/events")
    # httpx-sse also reports the stream's opening ``retry: 1500`` block, which
    # has no data (a browser dispatches nothing for it).
    opening, *events = received
    assert (opening.data, opening.retry) == ("", 1500)
    seen = [Seen(e.event, e.data, e.id or None, e.retry) for e in events]
    assert seen == EXPECTED


async def test_httpx_sse_resumes_with_last_event_id() -> None:
    with trio.fail_after(LIMIT):
        async with running() as (app, url):
            bc = app.broadcaster
            ids = [await bc.publish("room", f"item {n}") for n in range(1, 7)]

            async def end_after_live_item() -> None:
                await app.subscribed.wait()
                await bc.publish("room", "item 7")
                bc.remove("room")  # ends the stream after what it holds

            async with trio.open_nursery() as nursery:
                nursery.start_soon(end_after_live_item)
                received = await read_with_httpx_sse(
                    url + "/live", headers={"Last-Event-ID": ids[2]}
                )
    assert app.resumed_from == [ids[2]]
    events = [e for e in received if e.data]
    assert [e.data for e in events] == ["item 4", "item 5", "item 6", "item 7"]
    assert [e.id for e in events[:3]] == ids[3:]
    assert received[0].retry == 500


# -- sseclient-py over urllib ------------------------------------------------


def read_with_sseclient(
    url: str, headers: dict[str, str] | None = None
) -> list[sseclient.Event]:
    request = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(request, timeout=SOCKET_TIMEOUT) as response:
        assert response.status == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        return list(sseclient.SSEClient(response).events())


async def test_sseclient_py_reads_events_ids_multiline_and_retry() -> None:
    with trio.fail_after(LIMIT):
        async with running() as (_, url):
            events = await trio.to_thread.run_sync(
                read_with_sseclient, url + "/events", abandon_on_cancel=True
            )
    seen = [
        Seen(e.event, e.data, e.id, None if e.retry is None else int(e.retry))
        for e in events
    ]
    assert seen == EXPECTED


async def test_sseclient_py_resumes_with_last_event_id() -> None:
    with trio.fail_after(LIMIT):
        async with running() as (app, url):
            bc = app.broadcaster
            ids = [await bc.publish("room", f"item {n}") for n in range(1, 5)]

            async def end_after_live_item() -> None:
                await app.subscribed.wait()
                await bc.publish("room", "item 5")
                bc.remove("room")

            async with trio.open_nursery() as nursery:
                nursery.start_soon(end_after_live_item)
                events = await trio.to_thread.run_sync(
                    read_with_sseclient,
                    url + "/live",
                    {"Last-Event-ID": ids[0]},
                    abandon_on_cancel=True,
                )
    assert [e.data for e in events] == ["item 2", "item 3", "item 4", "item 5"]
    assert [e.id for e in events[:3]] == ids[1:]


@pytest.mark.parametrize("reader", ["httpx-sse", "sseclient-py"])
async def test_unknown_last_event_id_starts_live(reader: str) -> None:
    with trio.fail_after(LIMIT):
        async with running() as (app, url):
            bc = app.broadcaster
            await bc.publish("room", "old")

            async def end_after_live_item() -> None:
                await app.subscribed.wait()
                await bc.publish("room", "new")
                bc.remove("room")

            headers = {"Last-Event-ID": "0-0"}
            async with trio.open_nursery() as nursery:
                nursery.start_soon(end_after_live_item)
                if reader == "httpx-sse":
                    got = [
                        e.data
                        for e in await read_with_httpx_sse(url + "/live", headers)
                    ]
                else:
                    got = [
                        e.data
                        for e in await trio.to_thread.run_sync(
                            read_with_sseclient,
                            url + "/live",
                            headers,
                            abandon_on_cancel=True,
                        )
                    ]
    assert [data for data in got if data] == ["new"]
