"""A Quart-trio app streams through ``trio_sse.quart``.

The app runs on a real Hypercorn trio worker (:func:`trio_sse.serve`) and is
read by the project's client and httpx-sse: events, ``Last-Event-ID``
resumption, keep-alives past Quart's ``RESPONSE_TIMEOUT``, a closed
connection freeing the subscription, and a graceful shutdown ending the
streams.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import httpx_sse
import pytest
import quart
import trio
from helpers import (
    CHAT_CHECK_PAGE,
    load_example,
    open_http_stream,
    run_chromium,
    serve_app,
    wait_subscribers,
    with_page,
)
from quart_trio import QuartTrio

import trio_sse
from trio_sse import Broadcaster, Event, Sender, SseConfig, SseResponse
from trio_sse.client import open_event_source
from trio_sse.quart import EventSourceResponse, last_event_id
from trio_sse.testing import open_stream, request

LIMIT = 10  # seconds any test may take

EVENTS = [
    Event("hello", event="greeting"),
    Event.json({"n": 2, "text": "ünïcode ✓"}),
    Event("line one\nline two"),
]


def make_app(bc: Broadcaster[str, Event]) -> QuartTrio:
    app = QuartTrio(__name__)

    @app.get("/events/<room>")
    async def events(room: str) -> EventSourceResponse:
        stream = bc.subscribe(room, last_event_id=last_event_id())
        return EventSourceResponse(bc.response(stream))

    @app.get("/generator")
    async def generator() -> EventSourceResponse:
        async def items() -> AsyncIterator[Event]:
            yield Event("from a generator", id="g1")

        return EventSourceResponse(
            items(),
            config=SseConfig(retry=1.5),
            headers={"X-Room": "none", "Cache-Control": "no-store"},
        )

    @app.get("/channel")
    async def channel() -> EventSourceResponse:
        async def fn(tx: Sender) -> None:
            await tx.send(Event("from a channel"))

        return EventSourceResponse(bc.channel(fn))

    @app.get("/last-id")
    async def last_id() -> str:
        return repr(last_event_id(quart.request))

    return app


async def publish_when_subscribed(
    bc: Broadcaster[str, Event], room: str, ids: list[str]
) -> None:
    await wait_subscribers(bc, room, 1)
    for event in EVENTS:
        ids.append(await bc.publish(room, event))


async def test_project_client_reads_and_resumes() -> None:
    bc: Broadcaster[str, Event] = Broadcaster(history=100)
    ids: list[str] = []
    with trio.fail_after(LIMIT):
        async with serve_app(make_app(bc)) as url, trio.open_nursery() as nursery:
            nursery.start_soon(publish_when_subscribed, bc, "lobby", ids)
            async with open_event_source(url + "/events/lobby") as source:
                received = [await anext(aiter(source)) for _ in EVENTS]
            assert [(m.type, m.data, m.last_event_id) for m in received] == [
                (e.event or "message", e.data, i)
                for e, i in zip(EVENTS, ids, strict=True)
            ]
            async with open_event_source(
                url + "/events/lobby", last_event_id=ids[0]
            ) as source:
                replayed = [await anext(aiter(source)) for _ in EVENTS[1:]]
            assert [m.last_event_id for m in replayed] == ids[1:]
            await wait_subscribers(bc, "lobby", 0)


async def test_httpx_sse_reads_headers_generator_and_channel() -> None:
    bc: Broadcaster[str, Event] = Broadcaster()
    with trio.fail_after(LIMIT):
        async with serve_app(make_app(bc)) as url, httpx.AsyncClient() as client:
            async with httpx_sse.aconnect_sse(client, "GET", url + "/generator") as s:
                headers = s.response.headers
                assert headers["content-type"] == "text/event-stream; charset=utf-8"
                assert headers["cache-control"] == "no-store"  # the route's
                assert headers["x-accel-buffering"] == "no"
                assert headers["x-room"] == "none"
                assert "content-length" not in headers
                received = [sse async for sse in s.aiter_sse()]
            # httpx-sse reports the opening retry: block as an empty event.
            assert [(e.data, e.id, e.retry) for e in received] == [
                ("", "", 1500),
                ("from a generator", "g1", None),
            ]
            assert s.response.is_closed
            async with httpx_sse.aconnect_sse(client, "GET", url + "/channel") as s:
                assert [e.data async for e in s.aiter_sse()] == ["from a channel"]


async def test_keep_alive_outlives_quarts_response_timeout() -> None:
    bc: Broadcaster[str, Event] = Broadcaster(config=SseConfig(keep_alive=0.05))
    app = make_app(bc)
    app.config["RESPONSE_TIMEOUT"] = 0.1  # Quart's own cut-off for responses
    with trio.fail_after(LIMIT):
        async with (
            serve_app(app) as url,
            open_http_stream(url, "/events/lobby") as http,
        ):
            assert await http.receive_response() == 200
            start = trio.current_time()
            # Keep-alive comments go on for several RESPONSE_TIMEOUTs.
            await http.read_until(b":\n", count=8)
            assert trio.current_time() - start > 0.3
            assert not (http.complete or http.eof)
            bc.send("lobby", Event("still here"))
            await http.read_until(b"data: still here\n\n")


async def test_disconnect_frees_the_subscription() -> None:
    bc: Broadcaster[str, Event] = Broadcaster(config=SseConfig(keep_alive=None))
    with trio.fail_after(LIMIT):
        async with serve_app(make_app(bc)) as url:
            async with open_http_stream(url, "/events/lobby") as http:
                assert await http.receive_response() == 200
                await wait_subscribers(bc, "lobby", 1)
                bc.send("lobby", Event("one"))
                await http.read_until(b"data: one\n\n")
            await wait_subscribers(bc, "lobby", 0)
            assert bc.keys() == []


async def test_graceful_shutdown_ends_the_streams() -> None:
    bc: Broadcaster[str, Event] = Broadcaster(config=SseConfig(shutdown_retry=2.5))
    server_scope = trio.CancelScope()

    async def run_server(task_status: trio.TaskStatus[list[str]]) -> None:
        with server_scope:
            await trio_sse.serve(make_app(bc), "127.0.0.1", 0, task_status=task_status)

    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            urls = await nursery.start(run_server)
            async with (
                open_http_stream(urls[0], "/events/a") as first,
                open_http_stream(urls[0], "/events/b") as second,
            ):
                for http in (first, second):
                    assert await http.receive_response() == 200
                await wait_subscribers(bc, "a", 1)
                await wait_subscribers(bc, "b", 1)
                server_scope.cancel()
                for http in (first, second):
                    await http.read_to_end()
                    assert http.complete
                    assert bytes(http.body).endswith(b"retry: 2500\n\n")
    assert bc.keys() == []


@pytest.mark.parametrize(
    ("headers", "query", "expected"),
    [
        ({"last-event-id": "5-1"}, "", "5-1"),
        ({}, "?lastEventId=5-2", "5-2"),
        ({"last-event-id": "5-3\x00"}, "", None),  # NUL: ignored
        ({}, "", None),
    ],
)
async def test_last_event_id(
    headers: dict[str, str], query: str, expected: str | None
) -> None:
    app = make_app(Broadcaster())
    response = await request(app, "GET", "/last-id" + query, headers=headers)
    assert response.status == 200
    assert response.body.decode() == repr(expected)


async def test_in_memory_with_trio_sse_testing() -> None:
    bc: Broadcaster[str, Event] = Broadcaster()
    async with open_stream(make_app(bc), "/events/lobby") as events:
        assert events.status == 200
        await wait_subscribers(bc, "lobby", 1)
        bc.send("lobby", Event("in memory"))
        assert (await anext(aiter(events))).data == "in memory"
    await wait_subscribers(bc, "lobby", 0)


async def iter_events() -> AsyncIterator[Event]:
    yield Event("x")


async def test_construction_errors() -> None:
    with pytest.raises(RuntimeError, match="inside a Quart request"):
        EventSourceResponse(iter_events())
    app = QuartTrio(__name__)
    async with app.test_request_context("/"):
        with pytest.raises(TypeError, match="on the SseResponse itself"):
            EventSourceResponse(SseResponse(iter_events()), status=201)
        response: Any = EventSourceResponse(SseResponse(iter_events(), status=201))
        assert response.status_code == 201
        assert response.timeout is None


# -- examples/quart_chat.py ------------------------------------------------------

FORM = {"content-type": "application/x-www-form-urlencoded"}
BROWSER_LIMIT = 90  # seconds: launching a browser on a busy machine is slow


async def test_quart_chat_posts_replays_and_rejects() -> None:
    app = load_example("quart_chat").make_app()
    async with open_stream(app, "/rooms/lobby/events") as stream:
        assert stream.status == 200
        presence = await anext(aiter(stream))
        assert (presence.type, json.loads(presence.data)) == ("presence", {"online": 1})
        ids = []
        for text in ("first", "second"):
            body = f"user=ann&text={text}".encode()
            posted = await request(app, "POST", "/rooms/lobby/messages", body, FORM)
            assert posted.status == 201
            ids.append(posted.json()["id"])
        got = [await anext(aiter(stream)) for _ in ids]
    assert [json.loads(m.data)["text"] for m in got] == ["first", "second"]
    assert [m.last_event_id for m in got] == ids
    headers = {"last-event-id": ids[0]}
    async with open_stream(app, "/rooms/lobby/events", headers=headers) as stream:
        replayed = []
        async for message in stream:
            if message.type == "message":
                replayed.append(message)
                break
    assert [(json.loads(m.data)["text"], m.last_event_id) for m in replayed] == [
        ("second", ids[1])
    ]
    empty = await request(app, "POST", "/rooms/lobby/messages", b"text=+", FORM)
    assert empty.status == 400
    long_room = "/rooms/" + "x" * 41 + "/events"
    assert (await request(app, "GET", long_room)).status == 400


@pytest.mark.browser
async def test_quart_chat_in_chromium(browser_required: None) -> None:
    app = load_example("quart_chat").make_app()
    async with serve_app(with_page(app, "/check", CHAT_CHECK_PAGE)) as url:
        verdict = await run_chromium(url + "/check", BROWSER_LIMIT)
        # The page closed its streams: the server let go of them.
        await wait_subscribers(app.config["rooms"], "browser", 0)
    assert "error" not in verdict, verdict
    assert verdict["online"] == "1 online"
    texts = ["hello from chromium", "second", "third"]
    assert len(verdict["messages"]) == 3
    assert all(m.endswith(t) for m, t in zip(verdict["messages"], texts, strict=True))
    assert verdict["second"]["status"] == verdict["third"]["status"] == 201
    assert verdict["replay"]["data"]["text"] == "third"
    assert verdict["replay"]["id"] == verdict["third"]["id"]
