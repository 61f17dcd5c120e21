"""trio_sse.metrics: every metric moves on the event that should move it.

In memory through :mod:`trio_sse.testing` and ``Metrics.middleware``, and
over a real Hypercorn server (``serve(app, metrics=...)``) scraped by httpx,
the exposition read back with :mod:`prometheus_client.parser`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import partial
from typing import Any

import httpx
import pytest
import trio
import trio.testing
from helpers import open_websocket_app, wait_subscribers
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Route

import trio_sse
from trio_sse import (
    Broadcaster,
    End,
    Event,
    Lagged,
    LagPolicy,
    SseConfig,
    SseResponse,
    StreamCounters,
    WebSocketResponse,
)
from trio_sse._limits import STREAMS_SCOPE_KEY, StreamCount
from trio_sse.metrics import OTHER_KEYS, Metrics
from trio_sse.starlette import EventSourceResponse
from trio_sse.testing import open_stream, request
from trio_sse.websocket import StreamRequest, open_websocket_source, serve_websocket

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Every sample of an exposition, by name and labels."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def scrape(app: Any) -> Samples:
    """GET /metrics from ``app`` in memory and parse it."""
    response = await request(app, "GET", "/metrics")
    assert response.status == 200
    assert response.headers["content-type"].startswith("text/plain")
    return parse(response.body.decode())


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def routes(metrics: Metrics, streams: Any) -> Any:
    """``/metrics`` is the exposition; any other path asks ``streams(scope)``
    for the response to run; the whole app counts its streams in ``metrics``."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/metrics":
            await metrics.app(scope, receive, send)
        else:
            await streams(scope)(scope, receive, send)

    return metrics.middleware(app)


async def endless() -> AsyncIterator[Event]:
    await trio.sleep_forever()
    yield Event("never")  # pragma: no cover


# -- streams: open, written, ended ---------------------------------------------


async def test_open_streams_and_their_ends(autojump_clock: Any) -> None:
    metrics = Metrics()
    app = routes(metrics, lambda scope: SseResponse(endless()))
    before = await scrape(app)
    assert value(before, "trio_sse_streams_open", transport="sse") == 0
    async with open_stream(app, "/a"), open_stream(app, "/b"):
        samples = await scrape(app)
        assert value(samples, "trio_sse_streams_open", transport="sse") == 2
        assert value(samples, "trio_sse_streams_opened_total", transport="sse") == 2
        assert value(samples, "trio_sse_streams_open", transport="websocket") == 0
    samples = await scrape(app)
    assert value(samples, "trio_sse_streams_open", transport="sse") == 0
    assert value(samples, "trio_sse_streams_opened_total", transport="sse") == 2
    ended = "trio_sse_streams_ended_total"
    assert value(samples, ended, transport="sse", reason="disconnected") == 2
    assert value(samples, ended, transport="sse", reason="ended") == 0


async def test_events_and_bytes_written_are_exact(autojump_clock: Any) -> None:
    metrics = Metrics()
    tx, rx = trio.open_memory_channel[Any](10)
    config = SseConfig(keep_alive=5, write_timeout=None)
    app = routes(metrics, lambda scope: SseResponse(rx, config=config))
    async with open_stream(app, "/") as stream:
        await stream.receive_chunk()  # the opening comment
        for item in (Event("one"), "two", Event.json({"n": 3}, event="x")):
            tx.send_nowait(item)
        received = [await stream.__anext__() for _ in range(3)]
        assert [event.data for event in received] == ["one", "two", '{"n":3}']
        samples = await scrape(app)
        written = value(samples, "trio_sse_written_bytes_total", transport="sse")
        assert written == len(stream.raw)
        events = value(samples, "trio_sse_events_written_total", transport="sse")
        assert events == 3
        # A keep-alive is bytes, not an event.
        await stream.receive_chunk()
        assert stream.comments[-1] == ""
        samples = await scrape(app)
        assert value(samples, "trio_sse_written_bytes_total", transport="sse") == (
            written + len(b":\n")
        )
        assert value(samples, "trio_sse_events_written_total", transport="sse") == 3
        tx.close()
        assert [event async for event in stream] == []
        assert stream.complete
    samples = await scrape(app)
    assert (
        value(samples, "trio_sse_streams_ended_total", transport="sse", reason="ended")
        == 1
    )


async def test_a_retry_block_and_a_batch_count_their_items_only(
    autojump_clock: Any,
) -> None:
    counters = StreamCounters()
    tx, rx = trio.open_memory_channel[Any](10)
    for data in ("a", "b", "c"):
        tx.send_nowait(data)
    tx.close()
    response = SseResponse(rx, config=SseConfig(retry=2.0))
    async with open_stream(counters.middleware(response), "/") as stream:
        assert [event.data async for event in stream] == ["a", "b", "c"]
    assert stream.chunks[0].startswith(b"retry: 2000\n\n")
    assert counters.sse.events == 3
    assert counters.sse.bytes == len(stream.raw)
    assert counters.sse.ends[End.ENDED] == 1


async def test_write_timeout(autojump_clock: Any) -> None:
    metrics = Metrics()
    bc: Broadcaster[str, Event] = Broadcaster(
        config=SseConfig(write_timeout=10, keep_alive=None)
    )
    app = routes(metrics, lambda scope: bc.response(bc.subscribe("k")))
    async with open_stream(app, "/") as stream:
        await stream.receive_chunk()
        bc.send("k", Event("not read"))  # the client stops reading
        await trio.sleep(9)
        samples = await scrape(app)
        ended = "trio_sse_streams_ended_total"
        assert value(samples, ended, transport="sse", reason="timed_out") == 0
        await trio.sleep(1)
        await trio.testing.wait_all_tasks_blocked()
        samples = await scrape(app)
        assert value(samples, ended, transport="sse", reason="timed_out") == 1
        assert value(samples, "trio_sse_streams_open", transport="sse") == 0
        assert not stream.complete


async def test_lifetime_end(autojump_clock: Any) -> None:
    metrics = Metrics()
    app = routes(metrics, lambda scope: SseResponse(endless(), lifetime=100))
    async with open_stream(app, "/") as stream:
        async for _ in stream:
            pass  # a lone retry: block is not an event
        assert stream.complete and stream.retry == 0
        assert 90 <= trio.current_time() <= 100
    samples = await scrape(app)
    ended = "trio_sse_streams_ended_total"
    assert value(samples, ended, transport="sse", reason="lifetime") == 1
    # The final retry: block is written, but it is no event.
    assert value(samples, "trio_sse_events_written_total", transport="sse") == 0


async def test_shutdown_end(autojump_clock: Any) -> None:
    counters = StreamCounters()
    shutdown = trio.Event()
    app = counters.middleware(SseResponse(endless()))
    async with open_stream(app, "/", shutdown=shutdown) as stream:
        shutdown.set()
        async for _ in stream:
            pass
    assert counters.sse.ends[End.SHUTDOWN] == 1
    assert counters.sse.open == 0


# -- overload refusals ----------------------------------------------------------


def with_count(app: Any, count: StreamCount) -> Any:
    """``app`` with the stream count serve() would put in each scope."""

    async def counted(scope: Any, receive: Any, send: Any) -> None:
        await app({**scope, STREAMS_SCOPE_KEY: count}, receive, send)

    return counted


async def test_overload_refusals_sse_and_websocket(autojump_clock: Any) -> None:
    metrics = Metrics()
    config = SseConfig(max_streams=1)
    count = StreamCount()
    count.open = 1  # the cap is reached
    sse = metrics.middleware(with_count(SseResponse(endless(), config=config), count))
    async with open_stream(sse, "/") as stream:
        assert stream.status == 200
    ws = metrics.middleware(
        with_count(WebSocketResponse(endless(), config=config), count)
    )
    async with open_websocket_app(ws) as session:
        assert session.close_code == 1013
    samples = await scrape(routes(metrics, lambda scope: SseResponse(endless())))
    assert value(samples, "trio_sse_streams_refused_total", transport="sse") == 1
    assert value(samples, "trio_sse_streams_refused_total", transport="websocket") == 1
    assert value(samples, "trio_sse_streams_opened_total", transport="sse") == 0


# -- WebSocket ------------------------------------------------------------------


async def test_websocket_streams_are_counted_apart(autojump_clock: Any) -> None:
    metrics = Metrics()
    tx, rx = trio.open_memory_channel[Any](10)
    app = metrics.middleware(WebSocketResponse(rx))
    async with open_websocket_app(app) as session:
        tx.send_nowait(Event("hello"))
        assert (await session.receive_event()).data == "hello"
        assert metrics.websocket.open == 1
        assert metrics.websocket.events == 1
        assert metrics.websocket.bytes == sum(len(t.encode()) for t in session.texts)
        assert metrics.sse.opened == 0
    samples = await scrape(routes(metrics, lambda scope: SseResponse(endless())))
    ended = "trio_sse_streams_ended_total"
    assert value(samples, ended, transport="websocket", reason="disconnected") == 1
    assert value(samples, "trio_sse_events_written_total", transport="websocket") == 1


async def test_serve_websocket_counts_its_streams() -> None:
    metrics = Metrics()

    async def handler(request: StreamRequest) -> Any:
        return trio_sse.replay([Event("a"), Event("b")])

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                partial(serve_websocket, handler, "127.0.0.1", 0, metrics=metrics)
            )
            url = f"ws://127.0.0.1:{server.port}/"
            async with open_websocket_source(url, max_reconnects=0) as source:
                assert [event.data async for event in source] == ["a", "b"]
            assert source.close_code == 1000
            nursery.cancel_scope.cancel()
    assert metrics.websocket.events == 2
    assert metrics.websocket.ends[End.ENDED] == 1
    assert metrics.websocket.open == 0 and metrics.sse.opened == 0


# -- broadcasters: lag outcomes and subscribers per key ---------------------------


def subscribers(samples: Samples, name: str, key: str) -> float:
    return value(samples, "trio_sse_broadcast_subscribers", broadcaster=name, key=key)


def lags(samples: Samples, outcome: str, name: str = "bc") -> float:
    return value(
        samples, "trio_sse_broadcast_lags_total", broadcaster=name, outcome=outcome
    )


async def test_lag_skipped() -> None:
    metrics = Metrics()
    bc: Broadcaster[str, int] = Broadcaster(buffer=2)
    metrics.watch(bc, "bc")
    app = routes(metrics, lambda scope: SseResponse(endless()))
    async with bc.subscribe("k").on_lag(LagPolicy.SKIP) as stream:
        for i in range(5):
            bc.send("k", i)
        assert [stream.receive_nowait() for _ in range(2)] == [3, 4]
        samples = await scrape(app)
        assert lags(samples, "skipped") == 1
        assert lags(samples, "ended") == lags(samples, "raised") == 0
        assert value(samples, "trio_sse_broadcast_missed_total", broadcaster="bc") == 3
        assert (
            value(samples, "trio_sse_broadcast_published_total", broadcaster="bc") == 5
        )
        # A second episode, after the subscriber caught up.
        for i in range(3):
            bc.send("k", i)
        assert lags(await scrape(app), "skipped") == 2


async def test_lag_ended_by_the_end_policy(autojump_clock: Any) -> None:
    metrics = Metrics()
    bc: Broadcaster[str, Event] = Broadcaster(buffer=2)
    metrics.watch(bc, "bc")
    app = routes(
        metrics, lambda scope: bc.response(bc.subscribe("k").on_lag(LagPolicy.END))
    )
    async with open_stream(app, "/events") as stream:
        await stream.receive_chunk()
        await trio.testing.wait_all_tasks_blocked()
        # The response waits for an item: "0" goes to it, "1" and "2" fill
        # the buffer, "3" does not fit: the subscriber lags.
        for i in range(4):
            bc.send("k", Event(str(i)))
        received = [event.data async for event in stream]
    assert received == ["0", "1", "2"]  # what it held; then the end
    samples = await scrape(app)
    assert lags(samples, "ended") == 1
    assert lags(samples, "raised") == lags(samples, "skipped") == 0
    ended = "trio_sse_streams_ended_total"
    assert value(samples, ended, transport="sse", reason="ended") == 1


async def test_lag_raised_ends_a_response_as_lagged(autojump_clock: Any) -> None:
    metrics = Metrics()
    bc: Broadcaster[str, Event] = Broadcaster(buffer=2)
    metrics.watch(bc, "bc")
    app = routes(metrics, lambda scope: bc.response(bc.subscribe("k")))
    async with open_stream(app, "/events") as stream:
        await stream.receive_chunk()
        await trio.testing.wait_all_tasks_blocked()
        # "0" goes to the waiting response, "1" and "2" fill the buffer and
        # are dropped for "3" and "4": the next read raises Lagged.
        for i in range(5):
            bc.send("k", Event(str(i)))
        assert [event.data async for event in stream] == ["0"]
    samples = await scrape(app)
    assert lags(samples, "raised") == 1
    assert lags(samples, "ended") == lags(samples, "skipped") == 0
    ended = "trio_sse_streams_ended_total"
    assert value(samples, ended, transport="sse", reason="lagged") == 1


async def test_lag_raised_to_a_plain_subscriber() -> None:
    bc: Broadcaster[str, int] = Broadcaster(buffer=1)
    async with bc.subscribe("k") as stream:
        bc.send("k", 1)
        bc.send("k", 2)
        assert bc.stats().lag_raised == 0  # not raised until read
        with pytest.raises(Lagged):
            stream.receive_nowait()
        assert stream.receive_nowait() == 2
    stats = bc.stats()
    assert (stats.lag_raised, stats.lag_skipped, stats.lag_ended) == (1, 0, 0)


async def test_subscribers_per_key_are_bounded() -> None:
    metrics = Metrics(top_keys=3)
    bc: Broadcaster[str, int] = Broadcaster()
    metrics.watch(bc, "bc")
    small: Broadcaster[int, int] = Broadcaster()
    metrics.watch(small, "small", top_keys=0)
    streams = [bc.subscribe(f"key{n}") for n in range(50) for _ in range(n % 7)]
    streams += [small.subscribe(n) for n in range(4)]
    expected = {f"key{n}": n % 7 for n in range(50) if n % 7}
    app = routes(metrics, lambda scope: SseResponse(endless()))
    samples = await scrape(app)
    series = {
        dict(labels)["key"]: count
        for (name, labels), count in samples.items()
        if name == "trio_sse_broadcast_subscribers"
        and dict(labels)["broadcaster"] == "bc"
    }
    assert len(series) == 4  # the top 3 keys and the others
    top = sorted(expected.values(), reverse=True)[:3]
    counts = sorted((c for k, c in series.items() if k != OTHER_KEYS), reverse=True)
    assert counts == top
    assert all(expected[k] == c for k, c in series.items() if k != OTHER_KEYS)
    assert series[OTHER_KEYS] == sum(expected.values()) - sum(top)
    assert value(samples, "trio_sse_broadcast_keys", broadcaster="bc") == len(expected)
    assert subscribers(samples, "small", OTHER_KEYS) == 4
    for stream in streams:
        stream.close()
    samples = await scrape(app)
    assert subscribers(samples, "bc", OTHER_KEYS) == 0
    assert value(samples, "trio_sse_broadcast_keys", broadcaster="bc") == 0
    metrics.unwatch("small")
    assert not any(
        dict(labels).get("broadcaster") == "small" for _, labels in await scrape(app)
    )


async def test_stats_of_the_busiest_keys_only() -> None:
    bc: Broadcaster[str, int] = Broadcaster()
    streams = [
        bc.subscribe(key) for key, n in (("a", 1), ("b", 3), ("c", 2)) for _ in range(n)
    ]
    bc.send("a", 1)
    stats = bc.stats(top=2)
    assert list(stats.keys) == ["b", "c"]  # most subscribers first
    assert stats.keys["c"].subscribers == 2
    assert stats.subscribers == 6 and stats.published == 1  # totals of all keys
    assert bc.stats(top=0).keys == {}
    assert set(bc.stats().keys) == {"a", "b", "c"}
    with pytest.raises(ValueError, match="top"):
        bc.stats(top=-1)
    for stream in streams:
        stream.close()


async def test_keys_with_the_same_text_share_a_series() -> None:
    metrics = Metrics()
    bc: Broadcaster[Any, int] = Broadcaster()
    metrics.watch(bc, "bc")
    streams = [bc.subscribe(1), bc.subscribe("1"), bc.subscribe("1")]
    samples = await scrape(routes(metrics, lambda scope: SseResponse(endless())))
    assert subscribers(samples, "bc", "1") == 3
    for stream in streams:
        stream.close()


# -- frameworks ---------------------------------------------------------------------


async def test_a_starlette_application(autojump_clock: Any) -> None:
    """``Route("/metrics", metrics.app)`` and ``metrics.middleware(app)``."""
    metrics = Metrics()
    bc: Broadcaster[str, Event] = Broadcaster()
    metrics.watch(bc, "rooms")

    async def events(request: Request) -> EventSourceResponse:
        return EventSourceResponse(bc.subscribe(request.path_params["room"]))

    app = metrics.middleware(
        Starlette(
            routes=[Route("/metrics", metrics.app), Route("/rooms/{room}", events)]
        )
    )
    async with open_stream(app, "/rooms/lobby") as stream:
        bc.send("lobby", Event("hi"))
        assert (await stream.__anext__()).data == "hi"
        samples = await scrape(app)
        assert value(samples, "trio_sse_streams_open", transport="sse") == 1
        assert value(samples, "trio_sse_events_written_total", transport="sse") == 1
        assert subscribers(samples, "rooms", "lobby") == 1


# -- the Metrics object -----------------------------------------------------------


def test_bad_arguments_are_refused() -> None:
    metrics = Metrics()
    bc: Broadcaster[str, int] = Broadcaster()
    with pytest.raises(TypeError, match="Broadcaster"):
        metrics.watch(object(), "x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="name"):
        metrics.watch(bc, "")
    with pytest.raises(ValueError, match="top_keys"):
        metrics.watch(bc, "x", top_keys=-1)
    with pytest.raises(ValueError, match="top_keys"):
        Metrics(top_keys=True)
    metrics.watch(bc, "x")
    with pytest.raises(ValueError, match="already watched"):
        metrics.watch(bc, "x")
    with pytest.raises(KeyError, match="no broadcaster"):
        metrics.unwatch("y")
    with pytest.raises(TypeError, match="ASGI application"):
        metrics.middleware(None)  # type: ignore[arg-type]


def test_each_metrics_object_owns_its_registry() -> None:
    one, two = Metrics(), Metrics()
    assert one.registry is not two.registry
    one.sse.opened = 1
    assert two.sse.opened == 0
    # A registry of the application's own gets the metrics next to its own,
    # and name clashes are caught when registering.
    registry = CollectorRegistry()
    Counter("app_requests", "Requests.", registry=registry)
    shared = Metrics(registry=registry)
    assert shared.registry is registry
    with pytest.raises(ValueError, match="Duplicated"):
        Metrics(registry=registry)


async def test_the_app_serves_lifespan_and_refuses_websockets() -> None:
    metrics = Metrics()
    to_app, app_receive = trio.open_memory_channel[Any](2)
    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    to_app.send_nowait({"type": "lifespan.startup"})
    to_app.send_nowait({"type": "lifespan.shutdown"})
    with trio.fail_after(5):
        await metrics.app({"type": "lifespan"}, app_receive.receive, send)
        await metrics.app({"type": "websocket"}, app_receive.receive, send)
    assert [m["type"] for m in sent] == [
        "lifespan.startup.complete",
        "lifespan.shutdown.complete",
        "websocket.close",
    ]


async def test_serve_refuses_what_is_not_counters() -> None:
    with pytest.raises(TypeError, match="metrics must be"):
        await trio_sse.serve(SseResponse(endless()), port=0, metrics=object())  # type: ignore[arg-type]


# -- over a real server -----------------------------------------------------------


async def test_scraped_over_a_real_server(open_server: Any, open_http: Any) -> None:
    """serve(app, metrics=...): a real EventSource-style stream, a refusal over
    max_streams, and /metrics scraped with httpx and parsed."""
    metrics = Metrics()
    config = SseConfig(max_streams=1, keep_alive=None)
    bc: Broadcaster[str, Event] = Broadcaster(config=config)
    metrics.watch(bc, "chat")

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/metrics":
            await metrics.app(scope, receive, send)
        elif scope["type"] == "http":
            room = scope["path"].strip("/")
            await bc.response(bc.subscribe(room))(scope, receive, send)

    async with (
        open_server(app, metrics=metrics) as url,
        httpx.AsyncClient(base_url=url) as client,
    ):

        async def scraped() -> Samples:
            response = await client.get("/metrics")
            assert response.status_code == 200
            return parse(response.text)

        with trio.fail_after(10):
            assert value(await scraped(), "trio_sse_streams_open", transport="sse") == 0
            async with open_http(url, "/lobby") as http:
                assert await http.receive_response() == 200
                await http.read_until(b"\n")  # the opening comment
                sent = [Event(f"message {i}") for i in range(3)]
                for event in sent:
                    bc.send("lobby", event)
                await http.read_until(b"\n\n", count=3)
                samples = await scraped()
                assert value(samples, "trio_sse_streams_open", transport="sse") == 1
                assert (
                    value(samples, "trio_sse_events_written_total", transport="sse")
                    == 3
                )
                assert value(
                    samples, "trio_sse_written_bytes_total", transport="sse"
                ) == len(http.body)
                assert subscribers(samples, "chat", "lobby") == 1
                # Over max_streams: refused at once.
                async with open_http(url, "/lobby") as refused:
                    await refused.read_to_end()
                samples = await scraped()
                assert (
                    value(samples, "trio_sse_streams_refused_total", transport="sse")
                    == 1
                )
            # The client left: the stream ends when the server notices.
            await wait_subscribers(bc, "lobby", 0)
            samples = await scraped()
            assert value(samples, "trio_sse_streams_open", transport="sse") == 0
            ended = "trio_sse_streams_ended_total"
            assert value(samples, ended, transport="sse", reason="disconnected") == 1
