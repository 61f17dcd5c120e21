"""Broadcaster + SseResponse over a real Hypercorn trio server, read off raw sockets.

Real time here: every wait is bounded with ``trio.fail_after``. Latencies
are printed (``pytest -s``) for the record.
"""

from __future__ import annotations

import socket
import statistics
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio
from helpers import open_http_stream, serve_app

from trio_sse import (
    Broadcaster,
    BroadcastStream,
    Event,
    LagPolicy,
    SseConfig,
    last_event_id,
)

HAS_USER_TIMEOUT = hasattr(socket, "TCP_USER_TIMEOUT")


class Server:
    """One broadcaster; ``GET /<key>`` subscribes to ``<key>``."""

    def __init__(self, config: SseConfig, *, track: bool = False) -> None:
        self.bc: Broadcaster[str, Event] = Broadcaster(buffer=32, config=config)
        self.track = track
        #: One event per request, set once its subscription is closed.
        self.closed: list[trio.Event] = []

    async def _tracked(
        self, stream: BroadcastStream[Event], closed: trio.Event
    ) -> AsyncIterator[Event]:
        try:
            async with stream:
                async for event in stream:
                    yield event
        finally:
            closed.set()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        key = scope["path"].strip("/")
        stream = self.bc.subscribe(key, last_event_id=last_event_id(scope))
        stream = stream.on_lag(LagPolicy.SKIP)
        if self.track:
            closed = trio.Event()
            self.closed.append(closed)
            response = self.bc.response(self._tracked(stream, closed))
        else:
            response = self.bc.response(stream)
        await response(scope, receive, send)


async def subscribed(bc: Broadcaster[str, Event], key: str, count: int) -> None:
    """Wait (bounded) until *key* has *count* subscribers."""
    # Registration happens in the server's task; there is no hook to wait on.
    with trio.fail_after(5):
        while bc.subscriber_count(key) != count:  # noqa: ASYNC110
            await trio.sleep(0.001)


async def test_headers_events_and_ids() -> None:
    server = Server(SseConfig(keep_alive=None, retry=1.5))
    async with serve_app(server) as url, open_http_stream(url, "/news") as http:
        with trio.fail_after(5):
            assert await http.receive_response() == 200
            await subscribed(server.bc, "news", 1)
            ids = [
                await server.bc.publish("news", Event("plain")),
                await server.bc.publish("news", Event.json({"a": 1}, event="update")),
                await server.bc.publish("news", Event("two\nlines")),
            ]
            while len(http.events()) < 3:
                await http.receive_some()
    assert http.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert http.headers["cache-control"] == "no-cache"
    assert http.headers["x-accel-buffering"] == "no"
    assert http.headers["transfer-encoding"].lower() == "chunked"
    assert http.body.startswith(b"retry: 1500\n\n")
    events = http.events()
    assert [(e.type, e.data) for e in events] == [
        ("message", "plain"),
        ("update", '{"a":1}'),
        ("message", "two\nlines"),
    ]
    assert [e.last_event_id for e in events] == ids


async def test_reconnect_with_last_event_id_over_the_wire() -> None:
    server = Server(SseConfig(keep_alive=None))
    server.bc = Broadcaster(buffer=32, config=server.bc.config, history=10)
    first = await server.bc.publish("k", Event("one"))
    await server.bc.publish("k", Event("two"))
    async with serve_app(server) as url:
        headers = [("last-event-id", first)]
        async with open_http_stream(url, "/k", headers=headers) as http:
            with trio.fail_after(5):
                while not http.events():
                    await http.receive_some()
    assert [e.data for e in http.events()] == ["two"]


async def test_keep_alive_comments_arrive() -> None:
    server = Server(SseConfig(keep_alive=0.1))
    async with serve_app(server) as url, open_http_stream(url, "/quiet") as http:
        start = time.monotonic()
        with trio.fail_after(5):
            while len(http.comments()) < 3:  # the opening comment, then two
                await http.receive_some()
        elapsed = time.monotonic() - start
    assert http.events() == []
    assert 0.15 < elapsed < 3


async def test_disconnect_unsubscribes() -> None:
    """Client closes its socket -> the subscription is gone; latency printed."""
    server = Server(SseConfig(keep_alive=None), track=True)
    latencies = []
    async with serve_app(server) as url:
        async with open_http_stream(url, "/k") as keeper:
            for i in range(10):
                async with open_http_stream(url, "/k") as http:
                    with trio.fail_after(5):
                        await http.receive_response()
                    await subscribed(server.bc, "k", 2)
                    server.bc.send("k", Event(f"e{i}"))
                    with trio.fail_after(5):
                        await http.read_until(f"data: e{i}\n\n".encode())
                    start = time.monotonic()
                # The socket is closed here.
                with trio.fail_after(5):
                    await server.closed[-1].wait()
                latencies.append(time.monotonic() - start)
                assert server.bc.subscriber_count("k") == 1
            with trio.fail_after(5):
                await keeper.read_until(b"data: e9\n\n")
        await subscribed(server.bc, "k", 0)
    ms = sorted(x * 1000 for x in latencies)
    print(
        f"disconnect -> unsubscribed: median {statistics.median(ms):.2f} ms,"
        f" max {ms[-1]:.2f} ms over {len(ms)}"
    )
    assert ms[-1] < 1000


@pytest.mark.skipif(not HAS_USER_TIMEOUT, reason="TCP_USER_TIMEOUT is Linux only")
@pytest.mark.parametrize(
    "layers",
    [
        # TCP_USER_TIMEOUT alone: the kernel aborts the connection, Hypercorn
        # sees it broken and the response receives http.disconnect.
        "kernel",
        # Plus the response's own deadline around each send.
        "kernel+response",
    ],
)
async def test_non_reader_dropped_while_reader_keeps_receiving(layers: str) -> None:
    write_timeout = 1.0
    response_timeout = write_timeout if layers == "kernel+response" else None
    server = Server(SseConfig(keep_alive=None, write_timeout=response_timeout))
    payload = "x" * 4000

    async def publish() -> None:
        n = 0
        while True:
            n += 1
            server.bc.send("feed", Event(f"{n} {payload}"))
            await trio.sleep(0.002)

    serve_config = SseConfig(write_timeout=write_timeout)
    async with serve_app(server, config=serve_config) as url:  # noqa: SIM117
        async with trio.open_nursery() as nursery:
            nursery.start_soon(publish)
            async with open_http_stream(url, "/feed") as reader:
                await subscribed(server.bc, "feed", 1)
                async with open_http_stream(url, "/feed", rcvbuf=4096):
                    start = time.monotonic()
                    await subscribed(server.bc, "feed", 2)
                    with trio.fail_after(write_timeout + 10):
                        while server.bc.subscriber_count("feed") == 2:
                            await reader.receive_some()
                    dropped = time.monotonic() - start
                    assert server.bc.subscriber_count("feed") == 1
                    before = reader.body.count(b"\n\n")
                    with trio.fail_after(5):
                        await reader.read_until(b"\n\n", count=before + 50)
            nursery.cancel_scope.cancel()
    print(f"[{layers}] non-reader dropped after {dropped:.2f} s (write_timeout 1 s)")
    assert write_timeout * 0.9 < dropped < write_timeout + 5
    numbers = [int(e.data.split()[0]) for e in reader.events()]
    assert numbers == sorted(numbers)


async def test_graceful_shutdown_ends_open_streams_cleanly() -> None:
    server = Server(SseConfig(keep_alive=None, shutdown_retry=2.0))
    with trio.CancelScope() as outer:
        async with trio.open_nursery() as nursery:
            urls = await nursery.start(_serve, server)
            async with (
                open_http_stream(urls[0], "/a") as a,
                open_http_stream(urls[0], "/b") as b,
            ):
                await subscribed(server.bc, "a", 1)
                await subscribed(server.bc, "b", 1)
                server.bc.send("a", Event("last words"))
                with trio.fail_after(5):
                    await a.read_until(b"last words\n\n")
                start = time.monotonic()
                outer.cancel()
                with trio.CancelScope(shield=True), trio.fail_after(5):
                    await a.read_to_end()
                    await b.read_to_end()
    assert outer.cancelled_caught
    elapsed = time.monotonic() - start
    print(f"graceful shutdown with 2 open streams took {elapsed * 1000:.1f} ms")
    for http in (a, b):
        assert http.complete
        assert http.body.endswith(b"retry: 2000\n\n")
        assert http.raw.endswith(b"\r\n0\r\n\r\n")
    assert [e.data for e in a.events()] == ["last words"]
    assert server.bc.subscriber_count("a") == server.bc.subscriber_count("b") == 0
    assert elapsed < 2  # well before the 3 s graceful timeout


async def _serve(app: Any, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    from trio_sse import serve

    await serve(app, "127.0.0.1", 0, task_status=task_status)


async def test_cancelling_serve_with_open_streams_leaves_no_task() -> None:
    from test_serve import all_tasks

    server = Server(SseConfig(keep_alive=0.05))
    before = all_tasks()
    async with trio.open_nursery() as nursery:
        urls = await nursery.start(_serve, server)
        async with open_http_stream(urls[0], "/x") as http:
            with trio.fail_after(5):
                await http.receive_response()
                while len(http.comments()) < 3:
                    await http.receive_some()
            nursery.cancel_scope.cancel()
    assert all_tasks() == before
    assert server.bc.subscriber_count("x") == 0


async def test_http2_prior_knowledge_stream() -> None:
    """Hypercorn speaks h2c; the response sends no ``connection`` header there."""
    httpx = pytest.importorskip("httpx")
    pytest.importorskip("h2")
    server = Server(SseConfig(keep_alive=None))
    async with (
        serve_app(server) as url,
        httpx.AsyncClient(http1=False, http2=True) as client,
        client.stream("GET", url + "/k") as response,
    ):
        assert response.http_version == "HTTP/2"
        assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
        assert "connection" not in response.headers
        await subscribed(server.bc, "k", 1)
        event_id = await server.bc.publish("k", Event("over h2"))
        # End the stream so httpx reads the body to its end (it does not
        # close its nested async generators when left early).
        server.bc.remove("k")
        with trio.fail_after(5):
            body = await response.aread()
    assert body == b":\n" + f"id: {event_id}\ndata: over h2\n\n".encode()
    await subscribed(server.bc, "k", 0)
