"""The EventSource client against a real Hypercorn-trio server on 127.0.0.1.

The ASGI apps here write the wire format themselves (with
:meth:`trio_sse.Event.encode`), so each test controls exactly what the
client sees: when the stream ends, breaks or goes quiet. Real time is short
(the servers send small ``retry:`` values) and bounded with ``fail_after``.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from functools import partial
from typing import Any

import attrs
import pytest
import trio
from helpers import serve_app

import trio_sse
from trio_sse import (
    Broadcaster,
    BroadcastStream,
    Event,
    MessageEvent,
    Sender,
    SseConfig,
    last_event_id,
    sse_channel,
)
from trio_sse.client import (
    EventSourceError,
    NetworkError,
    ReadTimeout,
    open_event_source,
)

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
Handler = Callable[[dict[str, str], Receive, Send], Awaitable[None]]

LIMIT = 10  # seconds any real-time test may take
SSE = [(b"content-type", b"text/event-stream; charset=utf-8")]


async def wait_for_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def stream(*chunks: bytes, then: str = "end") -> Handler:
    """Answer 200 with *chunks*, then ``end`` the body, ``hang`` or ``crash``."""

    async def handler(headers: dict[str, str], receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": SSE})
        for chunk in chunks:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        if then == "end":
            await send({"type": "http.response.body", "body": b""})
        elif then == "hang":
            await wait_for_disconnect(receive)
        else:
            raise RuntimeError("the app breaks the connection")

    return handler


def answer(status: int, content_type: str | None, body: bytes = b"") -> Handler:
    async def handler(headers: dict[str, str], receive: Receive, send: Send) -> None:
        hdrs = (
            [] if content_type is None else [(b"content-type", content_type.encode())]
        )
        await send({"type": "http.response.start", "status": status, "headers": hdrs})
        await send({"type": "http.response.body", "body": body})

    return handler


@attrs.define(eq=False)
class ScriptedApp:
    """An ASGI app: request *n* gets handler *n* (the last one repeats)."""

    handlers: Sequence[Handler]
    #: (arrival time, lower-case request headers) per request.
    requests: list[tuple[float, dict[str, str]]] = attrs.Factory(list)
    disconnects: int = 0
    #: Set when a request's handler returns (the client went away or the
    #: response ended).
    finished: trio.Event = attrs.Factory(trio.Event)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        index = min(len(self.requests), len(self.handlers) - 1)
        self.requests.append((trio.current_time(), headers))
        try:
            await self.handlers[index](headers, receive, send)
        finally:
            self.disconnects += 1
            self.finished.set()

    def gaps(self) -> list[float]:
        times = [t for t, _ in self.requests]
        return [b - a for a, b in itertools.pairwise(times)]


async def test_named_json_and_multiline_events() -> None:
    events = [
        Event("first", event="greeting", id="1"),
        Event.json({"n": 1, "text": "ünïcode"}, id="2"),
        Event("line one\nline two\r\nline three", event="poem", id="3"),
        Event(""),
    ]
    app = ScriptedApp([stream(*(e.encode() for e in events), then="hang")])
    with trio.fail_after(LIMIT):
        async with serve_app(app) as url, open_event_source(url + "/e") as source:
            received = [await source.__anext__() for _ in events]
    assert received == [
        MessageEvent("greeting", "first", "1"),
        MessageEvent("message", '{"n":1,"text":"ünïcode"}', "2"),
        MessageEvent("poem", "line one\nline two\nline three", "3"),
        MessageEvent("message", "", "3"),
    ]
    assert json.loads(received[1].data) == {"n": 1, "text": "ünïcode"}
    headers = app.requests[0][1]
    assert headers["accept"] == "text/event-stream"
    assert headers["cache-control"] == "no-cache"


async def test_reconnects_after_the_server_ends_the_stream() -> None:
    async def second(headers: dict[str, str], receive: Receive, send: Send) -> None:
        assert headers.get("last-event-id") == "2"
        await stream(Event("c", id="3").encode(), then="hang")(headers, receive, send)

    app = ScriptedApp(
        [
            stream(
                Event(retry=0.1).encode(),
                Event("a", id="1").encode(),
                Event("b", id="2").encode(),
            ),
            second,
        ]
    )
    with trio.fail_after(LIMIT):
        async with serve_app(app) as url, open_event_source(url) as source:
            data = [(await source.__anext__()).data for _ in range(3)]
            assert source.reconnects == 1
            assert source.retry == 0.1
            assert source.last_event_id == "3"
    assert data == ["a", "b", "c"]
    assert app.gaps()[0] >= 0.1


async def test_reconnects_after_the_connection_breaks() -> None:
    app = ScriptedApp(
        [
            stream(Event("a", id="1", retry=0.05).encode(), then="crash"),
            stream(Event("b", id="2").encode(), then="hang"),
        ]
    )
    with trio.fail_after(LIMIT):
        async with serve_app(app) as url, open_event_source(url) as source:
            assert (await source.__anext__()).data == "a"
            assert (await source.__anext__()).data == "b"
            assert isinstance(source.last_error, NetworkError)
    assert app.requests[1][1]["last-event-id"] == "1"


async def test_read_timeout_reconnects() -> None:
    app = ScriptedApp(
        [
            stream(Event("a", id="1", retry=0.05).encode(), then="hang"),
            stream(Event("b", id="2").encode(), then="hang"),
        ]
    )
    with trio.fail_after(LIMIT):
        async with serve_app(app) as url, open_event_source(url, timeout=0.3) as s:
            assert (await s.__anext__()).data == "a"
            assert (await s.__anext__()).data == "b"
            assert isinstance(s.last_error, ReadTimeout)
    # The first connection was dropped by the client, seen by the server.
    assert app.gaps()[0] >= 0.3
    assert app.requests[1][1]["last-event-id"] == "1"


async def test_204_ends_iteration() -> None:
    app = ScriptedApp([stream(Event("a", retry=0.05).encode()), answer(204, None)])
    with trio.fail_after(LIMIT):
        async with serve_app(app) as url, open_event_source(url) as source:
            assert [event.data async for event in source] == ["a"]
    assert len(app.requests) == 2


@pytest.mark.parametrize(
    ("status", "content_type"),
    [(500, "text/plain"), (404, "text/html; charset=utf-8"), (200, "text/html")],
)
async def test_unusable_responses_raise_a_clear_error(
    status: int, content_type: str
) -> None:
    app = ScriptedApp([answer(status, content_type, b"<h1>nope</h1>")])
    with trio.fail_after(LIMIT):
        async with serve_app(app) as url, open_event_source(url + "/feed") as source:
            with pytest.raises(EventSourceError) as info:
                await source.__anext__()
    error = info.value
    assert error.status == status
    assert error.content_type == content_type
    assert error.url == url + "/feed"
    message = str(error)
    assert url + "/feed" in message and repr(content_type) in message
    if status != 200:
        assert f"HTTP {status}" in message
    assert len(app.requests) == 1


async def test_connection_refused_is_retried_until_max_reconnects() -> None:
    # A port that was just free: nothing listens there any more.
    async with serve_app(ScriptedApp([answer(204, None)])) as url:
        pass
    with trio.fail_after(LIMIT):
        async with open_event_source(url, retry=0.01, max_reconnects=2) as source:
            with pytest.raises(NetworkError) as info:
                await source.__anext__()
            assert source.reconnects == 2
    assert url in str(info.value)


async def test_leaving_the_block_disconnects_from_the_server() -> None:
    app = ScriptedApp([stream(Event("a").encode(), then="hang")])
    with trio.fail_after(LIMIT):
        async with serve_app(app) as url:
            async with open_event_source(url) as source:
                await source.__anext__()
                assert app.disconnects == 0
            # The server sees the disconnect: the app returns.
            await app.finished.wait()


async def test_cancelling_a_reader_disconnects_from_the_server() -> None:
    app = ScriptedApp([stream(Event("a").encode(), then="hang")])
    got_one = trio.Event()

    async def reader(url: str) -> None:
        async with open_event_source(url) as source:
            async for _event in source:
                got_one.set()

    with trio.fail_after(LIMIT):
        async with serve_app(app) as url:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(reader, url)
                await got_one.wait()
                nursery.cancel_scope.cancel()
            await app.finished.wait()


@attrs.define(eq=False)
class BroadcastApp:
    """Streams a Broadcaster key, resuming from Last-Event-ID; the first
    response ends after ``first_limit`` items (the server drops the stream).
    """

    first_limit: int
    broadcaster: Broadcaster[str, str] = attrs.Factory(
        lambda: Broadcaster(history=100, config=SseConfig(retry=0.05))
    )
    subscribed: list[trio.Event] = attrs.Factory(lambda: [trio.Event(), trio.Event()])
    first_ended: trio.Event = attrs.Factory(trio.Event)
    resumed_from: list[str | None] = attrs.Factory(list)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        resume = last_event_id(scope)
        number = len(self.resumed_from)
        self.resumed_from.append(resume)
        stream = self.broadcaster.subscribe("k", last_event_id=resume).cast_events(
            Event
        )
        self.subscribed[min(number, 1)].set()
        if number == 0:
            await self.broadcaster.response(self._limited(stream))(scope, receive, send)
        else:
            await self.broadcaster.response(stream)(scope, receive, send)

    async def _limited(self, stream: BroadcastStream[Event]) -> AsyncIterator[Event]:
        try:
            async with stream:
                for _ in range(self.first_limit):
                    yield await stream.__anext__()
        finally:
            self.first_ended.set()


async def test_reconnect_replays_from_broadcaster_history_without_gap() -> None:
    app = BroadcastApp(first_limit=3)
    bc = app.broadcaster
    ids: list[str] = []

    async def publisher() -> None:
        await app.subscribed[0].wait()
        ids.extend([await bc.publish("k", f"item {n}") for n in range(1, 6)])
        await app.first_ended.wait()
        # Published while the client is away: only the history has them.
        ids.extend([await bc.publish("k", f"item {n}") for n in range(6, 9)])
        await app.subscribed[1].wait()
        ids.extend([await bc.publish("k", f"item {n}") for n in range(9, 11)])

    with trio.fail_after(LIMIT):
        async with serve_app(app) as url, trio.open_nursery() as nursery:
            nursery.start_soon(publisher)
            received: list[MessageEvent] = []
            async with open_event_source(url) as source:
                async for event in source:
                    received.append(event)
                    if event.data == "item 10":
                        break
                assert source.reconnects == 1
                assert source.retry == 0.05
    assert [e.data for e in received] == [f"item {n}" for n in range(1, 11)]
    assert [e.last_event_id for e in received] == ids
    assert app.resumed_from == [None, ids[2]]


async def test_reads_a_fast_coalesced_stream_in_order() -> None:
    # The server writes as fast as it can, so events are coalesced into large
    # body chunks and split at arbitrary points: none may be lost or reordered.
    count = 5000

    async def produce(tx: Sender) -> None:
        for n in range(count):
            await tx.send(Event.json({"n": n, "pad": "x" * (n % 97)}, id=str(n)))

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await sse_channel(produce)(scope, receive, send)

    with trio.fail_after(60):
        async with serve_app(app) as url:
            started = trio.current_time()
            async with open_event_source(url, max_reconnects=0) as source:
                received = [json.loads(event.data)["n"] async for event in source]
            elapsed = trio.current_time() - started
    assert received == list(range(count))
    print(f"\nclient read {count} events in {elapsed:.3f} s: {count / elapsed:,.0f}/s")


@pytest.mark.parametrize("keep_alive", [0.05, None])
async def test_server_keep_alive_keeps_a_quiet_stream_open(
    keep_alive: float | None,
) -> None:
    # The server's keep-alive comments (every 50 ms) reset the client's read
    # timeout (300 ms) while it reads: a stream quiet for 1 s stays open.
    # Without keep-alive the same quiet stream times out and reconnects.
    release = trio.Event()

    async def produce(tx: Sender) -> None:
        await tx.send(Event("before", id="1"))
        await release.wait()
        await tx.send(Event("after", id="2"))
        await trio.sleep_forever()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            config = SseConfig(keep_alive=keep_alive)
            await sse_channel(produce, config)(scope, receive, send)

    async def release_later() -> None:
        await trio.sleep(1.0)
        release.set()

    with trio.fail_after(LIMIT):
        async with (
            serve_app(app) as url,
            open_event_source(url, timeout=0.3, retry=0.05) as source,
            trio.open_nursery() as nursery,
        ):
            assert (await source.__anext__()).data == "before"
            nursery.start_soon(release_later)
            # Reading throughout the quiet second.
            rest = []
            async for event in source:
                rest.append(event.data)
                if event.data == "after":
                    break
    if keep_alive is None:
        assert source.reconnects >= 1
        assert isinstance(source.last_error, ReadTimeout)
        assert rest[-1] == "after"
    else:
        assert rest == ["after"]
        assert source.reconnects == 0


async def test_survives_a_server_restart_on_the_same_port() -> None:
    # Server A shuts down gracefully (its stream ends with a short final
    # retry:); a second later server B comes up on the same port; the client,
    # refused and backing off meanwhile, resumes there with Last-Event-ID.
    seen_ids: list[str | None] = []

    def app_for(name: str) -> Any:
        async def produce(tx: Sender) -> None:
            await tx.send(Event(f"{name} hello", id=f"{name}-1"))
            await trio.sleep_forever()

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "http":
                seen_ids.append(last_event_id(scope))
                config = SseConfig(shutdown_retry=0.1)
                await sse_channel(produce, config)(scope, receive, send)

        return app

    a_stopped = trio.Event()
    server_a = trio.CancelScope()

    async def run_a(task_status: trio.TaskStatus[list[str]]) -> None:
        try:
            with server_a:
                await trio_sse.serve(
                    app_for("a"), "127.0.0.1", 0, task_status=task_status
                )
        finally:
            a_stopped.set()

    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            url = (await nursery.start(run_a))[0]
            port = int(url.rsplit(":", 1)[1])
            async with open_event_source(url, timeout=5.0) as source:
                assert (await source.__anext__()).data == "a hello"
                async with trio.open_nursery() as reading:
                    # Keep reading while server A goes away and B comes up.
                    reading.start_soon(source.__anext__)
                    server_a.cancel()
                    await a_stopped.wait()
                    # Nothing listens for a second: the client's attempts
                    # (0.1 s, then backing off) are refused.
                    await trio.sleep(1.0)
                    urls_b = await nursery.start(
                        partial(trio_sse.serve, app_for("b"), "127.0.0.1", port)
                    )
                    assert urls_b == [url]
                assert source.last_event_id == "b-1"
                assert source.retry == 0.1
                assert source.reconnects >= 2
                assert isinstance(source.last_error, NetworkError)
            nursery.cancel_scope.cancel()
    assert seen_ids[0] is None
    assert seen_ids[-1] == "a-1"
