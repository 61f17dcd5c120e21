"""Starlette and FastAPI apps stream through ``trio_sse.starlette``.

The apps run on a real Hypercorn trio worker (:func:`trio_sse.serve`) and
are read by the project's client, httpx-sse and headless Chromium's
``EventSource`` (also cross-origin, through Starlette's ``CORSMiddleware``
with ``withCredentials``, around a Starlette app and around a plain ASGI
app). A closed connection frees the subscription and a
graceful shutdown ends the streams. Smaller properties (headers set after
construction, FastAPI ``ServerSentEvent`` items, the ``Last-Event-ID``
helpers) are checked in memory with :mod:`trio_sse.testing`.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Callable
from functools import partial
from http.cookies import SimpleCookie
from typing import Any

import httpx
import httpx_sse
import pytest
import trio
from fastapi import FastAPI
from fastapi.sse import ServerSentEvent
from helpers import (
    CHAT_CHECK_PAGE,
    CHROMIUM,
    load_example,
    open_http_stream,
    run_chromium,
    serve_app,
    wait_subscribers,
    with_page,
)
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse
from starlette.routing import Route

import trio_sse
from trio_sse import Broadcaster, Event, Sender, SseConfig, SseResponse
from trio_sse.client import open_event_source
from trio_sse.starlette import (
    EventSourceResponse,
    LastEventId,
    last_event_id,
)
from trio_sse.testing import open_stream, request

LIMIT = 10  # seconds any network test may take
BROWSER_LIMIT = 90  # seconds: launching a browser on a busy machine is slow

AppFactory = Callable[[Broadcaster[str, Event]], Any]


def make_broadcaster(**config: Any) -> Broadcaster[str, Event]:
    return Broadcaster(history=100, config=SseConfig(**config))


def starlette_app(bc: Broadcaster[str, Event], page: str = "") -> Starlette:
    """``/events/{room}``: a broadcaster key, resumed by Last-Event-ID."""

    async def events(request: Request) -> EventSourceResponse:
        room = request.path_params["room"]
        stream = bc.subscribe(room, last_event_id=last_event_id(request))
        return EventSourceResponse(bc.response(stream))

    async def index(request: Request) -> HTMLResponse:
        return HTMLResponse(page)

    return Starlette(
        routes=[Route("/events/{room}", events), Route("/", index)],
    )


def fastapi_app(bc: Broadcaster[str, Event], page: str = "") -> FastAPI:
    """The same routes on FastAPI, with the ``LastEventId`` dependency."""
    app = FastAPI()

    @app.get("/events/{room}")
    async def events(room: str, last_id: LastEventId) -> EventSourceResponse:
        stream = bc.subscribe(room, last_event_id=last_id)
        return EventSourceResponse(bc.response(stream))

    @app.get("/")
    async def index() -> HTMLResponse:
        return HTMLResponse(page)

    return app


APPS = [
    pytest.param(starlette_app, id="starlette"),
    pytest.param(fastapi_app, id="fastapi"),
]

EVENTS = [
    Event("hello", event="greeting"),
    Event.json({"n": 2, "text": "ünïcode ✓"}),
    Event("line one\nline two"),
]


async def publish_when_subscribed(
    bc: Broadcaster[str, Event],
    room: str,
    events: list[Event],
    ids: list[str],
    *,
    end: bool = False,
    limit: float = LIMIT,
) -> None:
    """Publish *events* once *room* has a subscriber; *end*: then end its streams."""
    await wait_subscribers(bc, room, 1, limit)
    for event in events:
        ids.append(await bc.publish(room, event))
    if end:
        bc.remove(room)


# -- real server, three clients ------------------------------------------------


@pytest.mark.parametrize("factory", APPS)
async def test_project_client_reads_and_resumes(factory: AppFactory) -> None:
    bc = make_broadcaster()
    ids: list[str] = []
    with trio.fail_after(LIMIT):
        async with serve_app(factory(bc)) as url, trio.open_nursery() as nursery:
            nursery.start_soon(publish_when_subscribed, bc, "lobby", EVENTS, ids)
            async with open_event_source(url + "/events/lobby") as source:
                received = [await anext(aiter(source)) for _ in EVENTS]
            assert [(m.type, m.data) for m in received] == [
                (e.event or "message", e.data) for e in EVENTS
            ]
            assert [m.last_event_id for m in received] == ids
            # Resume after the first event: the history replays the rest.
            async with open_event_source(
                url + "/events/lobby", last_event_id=ids[0]
            ) as source:
                replayed = [await anext(aiter(source)) for _ in EVENTS[1:]]
            assert [m.last_event_id for m in replayed] == ids[1:]
            await wait_subscribers(bc, "lobby", 0)


@pytest.mark.parametrize("factory", APPS)
async def test_httpx_sse_reads_headers_and_events(factory: AppFactory) -> None:
    bc = make_broadcaster()
    ids: list[str] = []
    with trio.fail_after(LIMIT):
        async with (
            serve_app(factory(bc)) as url,
            trio.open_nursery() as nursery,
            httpx.AsyncClient() as client,
            httpx_sse.aconnect_sse(client, "GET", url + "/events/lobby") as source,
        ):
            nursery.start_soon(
                partial(publish_when_subscribed, bc, "lobby", EVENTS, ids, end=True)
            )
            headers = source.response.headers
            assert source.response.status_code == 200
            assert headers["content-type"] == "text/event-stream; charset=utf-8"
            assert headers["cache-control"] == "no-cache"
            assert headers["x-accel-buffering"] == "no"
            assert "content-length" not in headers
            # Read to the end: bc.remove() ends the stream.
            received = [sse async for sse in source.aiter_sse()]
    assert [(s.event, s.data, s.id) for s in received] == [
        (e.event or "message", e.data, i) for e, i in zip(EVENTS, ids, strict=True)
    ]


@pytest.mark.parametrize("factory", APPS)
async def test_disconnect_frees_the_subscription(factory: AppFactory) -> None:
    bc = make_broadcaster(keep_alive=None)
    with trio.fail_after(LIMIT):
        async with serve_app(factory(bc)) as url:
            async with open_http_stream(url, "/events/lobby") as http:
                assert await http.receive_response() == 200
                await wait_subscribers(bc, "lobby", 1)
                bc.send("lobby", Event("one"))
                await http.read_until(b"data: one\n\n")
            # The client closed its socket: the server notices and unsubscribes.
            await wait_subscribers(bc, "lobby", 0)
            assert bc.keys() == []


@pytest.mark.parametrize("factory", APPS)
async def test_graceful_shutdown_ends_the_streams(factory: AppFactory) -> None:
    bc = make_broadcaster(shutdown_retry=2.5)
    server_scope = trio.CancelScope()

    async def run_server(task_status: trio.TaskStatus[list[str]]) -> None:
        with server_scope:
            await trio_sse.serve(factory(bc), "127.0.0.1", 0, task_status=task_status)

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
                    # A complete response (chunked terminator), with the
                    # final retry: the clients reconnect to the next server.
                    assert http.complete
                    assert bytes(http.body).endswith(b"retry: 2500\n\n")
    assert bc.keys() == []


# -- headless Chromium ---------------------------------------------------------

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>trio_sse</title></head>
<body><script>
  // Opens one EventSource per entry of SOURCES; window.verdict maps each
  // name to what it saw, once every source got `count` events (or, with
  // `expectError`, failed).
  const SOURCES = __SOURCES__;
  const DEADLINE = __DEADLINE__;
  document.cookie = "session=s3cret; path=/";
  const verdict = {};
  let pending = SOURCES.length;
  for (const s of SOURCES) {
    const seen = verdict[s.name] = { events: [], opens: 0, errors: [] };
    const source = new EventSource(s.url, { withCredentials: !!s.credentials });
    let finished = false;
    const finish = () => {
      if (finished) return;
      finished = true;
      source.close();
      if (--pending === 0) window.verdict = verdict;
    };
    const record = (e) => {
      seen.events.push({ type: e.type, data: e.data, id: e.lastEventId });
      if (seen.events.length >= s.count) finish();
    };
    source.onopen = () => { seen.opens += 1; };
    source.onerror = () => {
      seen.errors.push(source.readyState);
      if (s.expectError) finish();
    };
    source.onmessage = record;
    for (const type of s.types || []) source.addEventListener(type, record);
  }
  // With a deadline (ms), the verdict is published then, finished or not.
  if (DEADLINE) setTimeout(() => { window.verdict = verdict; }, DEADLINE);
</script></body></html>
"""


def page(*sources: dict[str, Any], deadline: float | None = None) -> str:
    """The page opening *sources*; *deadline* (s): publish the verdict then."""
    ms = 0 if deadline is None else round(deadline * 1000)
    return PAGE.replace("__SOURCES__", json.dumps(list(sources))).replace(
        "__DEADLINE__", str(ms)
    )


@pytest.mark.browser
@pytest.mark.parametrize("factory", APPS)
async def test_chromium_eventsource(browser_required: None, factory: Any) -> None:
    bc = make_broadcaster()
    ids: list[str] = []
    html = page(
        {"name": "lobby", "url": "/events/lobby", "count": 3, "types": ["greeting"]}
    )
    async with serve_app(factory(bc, html)) as url, trio.open_nursery() as nursery:
        nursery.start_soon(
            partial(
                publish_when_subscribed, bc, "lobby", EVENTS, ids, limit=BROWSER_LIMIT
            )
        )
        verdict = await run_chromium(url + "/", BROWSER_LIMIT)
        await wait_subscribers(bc, "lobby", 0)  # the page closed it
    seen = verdict["lobby"]
    assert seen["opens"] == 1 and seen["errors"] == []
    assert [(e["type"], e["data"], e["id"]) for e in seen["events"]] == [
        (e.event or "message", e.data, i) for e, i in zip(EVENTS, ids, strict=True)
    ]


def greeting(cookie: str, origin: str) -> Event:
    """The event a CORS test stream starts with: what the request carried."""
    return Event.json({"cookie": cookie, "origin": origin}, event="hello")


def starlette_cors_app(allow_origin: str) -> Any:
    """A Starlette SSE route behind CORSMiddleware: it greets with the session
    cookie."""

    async def greet(request: Request) -> EventSourceResponse:
        cookie = request.cookies.get("session", "none")
        origin = request.headers.get("origin", "none")

        async def events() -> AsyncIterator[Event]:
            yield greeting(cookie, origin)
            await trio.sleep_forever()  # until the page closes it

        return EventSourceResponse(events())

    return Starlette(
        routes=[Route("/greet", greet)],
        middleware=[
            Middleware(
                CORSMiddleware,
                allow_origins=[allow_origin],
                allow_credentials=True,
            )
        ],
    )


def raw_cors_app(allow_origin: str) -> Any:
    """A plain ASGI app (an SseResponse, no framework) wrapped in Starlette's
    CORSMiddleware: the same greeting."""

    async def greet(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        headers = {
            k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]
        }
        cookies = SimpleCookie(headers.get("cookie", ""))
        cookie = cookies["session"].value if "session" in cookies else "none"

        async def events() -> AsyncIterator[Event]:
            yield greeting(cookie, headers.get("origin", "none"))
            await trio.sleep_forever()  # until the page closes it

        await SseResponse(events())(scope, receive, send)

    return CORSMiddleware(greet, allow_origins=[allow_origin], allow_credentials=True)


@pytest.mark.browser
@pytest.mark.parametrize(
    "cors_app", [starlette_cors_app, raw_cors_app], ids=["starlette", "raw"]
)
async def test_chromium_cross_origin_with_credentials(
    browser_required: None, cors_app: Callable[[str], Any]
) -> None:
    async with trio.open_nursery() as nursery:
        # The page's origin is the first server's; the streams come from two
        # other servers (other ports: other origins) behind CORSMiddleware.
        html: list[str] = []

        async def index(request: Request) -> HTMLResponse:
            return HTMLResponse(html[0])

        page_app = Starlette(routes=[Route("/", index)])
        page_urls = await nursery.start(
            partial(trio_sse.serve, page_app, "127.0.0.1", 0)
        )
        origin = page_urls[0]
        async with (
            serve_app(cors_app(allow_origin=origin)) as allowed,
            serve_app(cors_app(allow_origin="https://elsewhere.example")) as refused,
        ):
            html.append(
                page(
                    {
                        "name": "credentials",
                        "url": allowed + "/greet",
                        "count": 1,
                        "types": ["hello"],
                        "credentials": True,
                    },
                    {
                        "name": "anonymous",
                        "url": allowed + "/greet",
                        "count": 1,
                        "types": ["hello"],
                    },
                    {
                        "name": "refused",
                        "url": refused + "/greet",
                        "count": 1,
                        "types": ["hello"],
                        "credentials": True,
                        "expectError": True,
                    },
                )
            )
            verdict = await run_chromium(origin + "/", BROWSER_LIMIT)
        nursery.cancel_scope.cancel()

    credentials = verdict["credentials"]["events"]
    assert [json.loads(e["data"]) for e in credentials] == [
        {"cookie": "s3cret", "origin": origin}
    ]
    # Without withCredentials the browser sends no cookie.
    anonymous = verdict["anonymous"]["events"]
    assert [json.loads(e["data"]) for e in anonymous] == [
        {"cookie": "none", "origin": origin}
    ]
    # An origin the middleware does not allow: the browser refuses the
    # response and closes the EventSource (readyState CLOSED, no retry).
    refused_seen = verdict["refused"]
    assert refused_seen["events"] == [] and refused_seen["opens"] == 0
    assert refused_seen["errors"] == [2]


# -- in memory -----------------------------------------------------------------


async def test_headers_status_and_cookies_set_after_construction() -> None:
    async def stream() -> AsyncIterator[str]:
        yield "one"

    async def route(request: Request) -> EventSourceResponse:
        response = EventSourceResponse(stream(), headers={"x-room": "lobby"})
        response.set_cookie("seen", "yes")
        response.headers["cache-control"] = "no-store"
        response.status_code = 201
        return response

    app = Starlette(routes=[Route("/", route)])
    async with open_stream(app, "/") as events:
        assert events.status == 201
        assert events.headers["x-room"] == "lobby"
        assert events.headers["set-cookie"].startswith("seen=yes")
        assert events.headers["cache-control"] == "no-store"
        assert events.headers["content-type"] == "text/event-stream; charset=utf-8"
        assert [m.data async for m in events] == ["one"]


async def test_an_sse_response_is_served_as_made() -> None:
    bc = make_broadcaster()

    async def greet(tx: Sender) -> None:
        await tx.send(Event("from a channel", id="7"))

    ran: list[str] = []
    routes = [
        Route(
            "/channel",
            lambda request: EventSourceResponse(
                bc.channel(greet),
                background=BackgroundTask(ran.append, "background"),
            ),
        ),
        Route(
            "/teapot",
            lambda request: EventSourceResponse(
                SseResponse(iter_events("tea"), status=418, headers={"x-a": "b"})
            ),
        ),
    ]
    app = Starlette(routes=routes)
    async with open_stream(app, "/channel") as events:
        assert [(m.data, m.last_event_id) async for m in events] == [
            ("from a channel", "7")
        ]
    assert ran == ["background"]
    async with open_stream(app, "/teapot") as events:
        assert events.status == 418
        assert events.headers["x-a"] == "b"
        assert [m.data async for m in events] == ["tea"]


async def iter_events(*data: str) -> AsyncIterator[Event]:
    for item in data:
        yield Event(item)


def test_construction_errors() -> None:
    with pytest.raises(TypeError, match="on the SseResponse itself"):
        EventSourceResponse(SseResponse(iter_events()), config=SseConfig())
    with pytest.raises(TypeError, match="on the SseResponse itself"):
        EventSourceResponse(SseResponse(iter_events()), status=201)
    with pytest.raises(TypeError, match="async iterable"):
        EventSourceResponse([Event("a list")])  # type: ignore[arg-type]


class Point(BaseModel):
    x: int
    y: int


async def test_fastapi_server_sent_event_items() -> None:
    app = FastAPI()

    @app.get("/items")
    async def items() -> EventSourceResponse:
        async def stream() -> AsyncIterator[Any]:
            yield ServerSentEvent(data={"a": [1, "ü"]}, event="obj", id="1", retry=1500)
            yield ServerSentEvent(data=Point(x=1, y=2))
            yield ServerSentEvent(raw_data="<b>raw</b>\nsecond line", id="2")
            yield ServerSentEvent(data="quoted", comment="a note")
            yield Event("a trio_sse event", id="3")
            yield "a string"

        return EventSourceResponse(stream())

    async with open_stream(app, "/items") as events:
        received = [m async for m in events]
        comments = list(events.comments)
    assert [(m.type, m.data, m.last_event_id) for m in received] == [
        ("obj", '{"a": [1, "\\u00fc"]}', "1"),
        ("message", '{"x":1,"y":2}', "1"),
        ("message", "<b>raw</b>\nsecond line", "2"),
        ("message", '"quoted"', "2"),
        ("message", "a trio_sse event", "3"),
        ("message", "a string", "3"),
    ]
    assert received[0].retry == 1500
    assert "a note" in comments


@pytest.mark.parametrize(
    ("headers", "query", "expected"),
    [
        ({"last-event-id": "5-1"}, "", "5-1"),
        ({}, "?lastEventId=5-2", "5-2"),
        ({"last-event-id": "5-3"}, "?lastEventId=5-4", "5-3"),
        ({}, "", None),
        ({"last-event-id": "x" * 300}, "", None),  # over-long: ignored
    ],
)
async def test_last_event_id_helpers(
    headers: dict[str, str], query: str, expected: str | None
) -> None:
    async def starlette_route(request: Request) -> PlainTextResponse:
        return PlainTextResponse(repr(last_event_id(request)))

    fastapi = FastAPI()

    @fastapi.get("/")
    async def fastapi_route(last_id: LastEventId) -> PlainTextResponse:
        return PlainTextResponse(repr(last_id))

    for app in (Starlette(routes=[Route("/", starlette_route)]), fastapi):
        response = await request(app, "GET", "/" + query, headers=headers)
        assert response.body.decode() == repr(expected)


# -- examples/fastapi_chat.py ----------------------------------------------------

FORM = {"content-type": "application/x-www-form-urlencoded"}


async def test_fastapi_chat_posts_replays_and_rejects() -> None:
    app = load_example("fastapi_chat").make_app()
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
    # The browser reconnects with Last-Event-ID: the dependency reads it.
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
async def test_fastapi_chat_in_chromium(browser_required: None) -> None:
    app = load_example("fastapi_chat").make_app()
    async with serve_app(with_page(app, "/check", CHAT_CHECK_PAGE)) as url:
        verdict = await run_chromium(url + "/check", BROWSER_LIMIT)
        # The page closed its streams: the server let go of them.
        await wait_subscribers(app.state.rooms, "browser", 0)
    assert "error" not in verdict, verdict
    assert verdict["online"] == "1 online"
    texts = ["hello from chromium", "second", "third"]
    assert len(verdict["messages"]) == 3
    assert all(m.endswith(t) for m, t in zip(verdict["messages"], texts, strict=True))
    assert verdict["second"]["status"] == verdict["third"]["status"] == 201
    assert verdict["replay"]["data"]["text"] == "third"
    assert verdict["replay"]["id"] == verdict["third"]["id"]


# -- HTTP/2 over TLS in Chromium --------------------------------------------------

H2_STREAMS = 20  # far over the 6 connections a browser opens per HTTP/1.1 host


def tls_setup(tmp_path: Any) -> tuple[Any, Any, str]:
    """A trustme certificate for 127.0.0.1: (CA, Hypercorn config, Chromium
    wrapper trusting that certificate by the hash of its public key)."""
    import hashlib

    import hypercorn.config
    import trustme
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    certfile, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.cert_chain_pems[0].write_to_path(str(certfile))
    cert.private_key_pem.write_to_path(str(keyfile))
    config = hypercorn.config.Config()
    config.certfile, config.keyfile = str(certfile), str(keyfile)
    leaf = x509.load_pem_x509_certificate(cert.cert_chain_pems[0].bytes())
    spki = leaf.public_key().public_bytes(
        Encoding.DER, PublicFormat.SubjectPublicKeyInfo
    )
    pin = base64.b64encode(hashlib.sha256(spki).digest()).decode()
    wrapper = tmp_path / "chromium"
    wrapper.write_text(
        f'#!/bin/sh\nexec {CHROMIUM} --ignore-certificate-errors-spki-list={pin} "$@"\n'
    )
    wrapper.chmod(0o755)
    return ca, config, str(wrapper)


def many_streams_app(
    bc: Broadcaster[str, Event], html: str, seen: list[tuple[str, Any]]
) -> Starlette:
    """``/events/{key}`` records (HTTP version, client address) per stream."""

    async def events(request: Request) -> EventSourceResponse:
        scope = request.scope
        seen.append((scope["http_version"], tuple(scope["client"])))
        stream = bc.subscribe(request.path_params["key"])
        return EventSourceResponse(bc.response(stream))

    async def index(request: Request) -> HTMLResponse:
        return HTMLResponse(html)

    return Starlette(routes=[Route("/events/{key}", events), Route("/", index)])


@pytest.mark.browser
async def test_chromium_shares_one_http2_connection(
    browser_required: None, tmp_path: Any
) -> None:
    import ssl

    ca, config, chromium = tls_setup(tmp_path)
    bc = make_broadcaster()
    seen: list[tuple[str, Any]] = []
    keys = [f"s{i}" for i in range(H2_STREAMS)]
    html = page(*({"name": k, "url": f"/events/{k}", "count": 1} for k in keys))

    async def publish() -> None:
        for key in keys:
            await wait_subscribers(bc, key, 1, BROWSER_LIMIT)
        for key in keys:
            bc.send(key, Event(f"to {key}"))

    async with (
        serve_app(many_streams_app(bc, html, seen), hypercorn_config=config) as url,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(publish)
        url = url.replace("http://", "https://")
        verdict = await run_chromium(url + "/", BROWSER_LIMIT, chromium=chromium)
        browser_streams = list(seen)
        # A real HTTP/2 client: no connection header on an HTTP/2 response.
        context = ssl.create_default_context()
        ca.configure_trust(context)
        async with (
            httpx.AsyncClient(http2=True, verify=context) as client,
            client.stream("GET", url + "/events/solo") as response,
        ):
            assert response.http_version == "HTTP/2"
            assert response.headers["content-type"].startswith("text/event-stream")
            assert "connection" not in response.headers
    assert {key: [e["data"] for e in verdict[key]["events"]] for key in keys} == {
        key: [f"to {key}"] for key in keys
    }
    # Every stream came over HTTP/2, all on one connection.
    assert [version for version, _ in browser_streams] == ["2"] * H2_STREAMS
    assert len({client for _, client in browser_streams}) == 1


@pytest.mark.browser
async def test_chromium_over_http1_holds_six_streams(browser_required: None) -> None:
    """The contrast: over HTTP/1.1 the same page gets 6 streams, the rest wait."""
    bc = make_broadcaster()
    seen: list[tuple[str, Any]] = []
    keys = [f"s{i}" for i in range(H2_STREAMS)]
    # count 2: no source finishes (and frees its connection) on the one event.
    html = page(
        *({"name": k, "url": f"/events/{k}", "count": 2} for k in keys), deadline=3
    )

    async def publish() -> None:
        with trio.fail_after(BROWSER_LIMIT):
            while sum(bc.subscriber_count(k) for k in keys) < 6:  # noqa: ASYNC110
                await trio.sleep(0.001)
        for key in keys:
            bc.send(key, Event(f"to {key}"))

    async with (
        serve_app(many_streams_app(bc, html, seen)) as url,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(publish)
        verdict = await run_chromium(url + "/", BROWSER_LIMIT)
    received = [key for key in keys if verdict[key]["events"]]
    assert len(received) == 6
    assert len(seen) == 6  # the other 14 requests were never sent
    assert {version for version, _ in seen} == {"1.1"}
