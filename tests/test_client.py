"""The EventSource client's processing model, deterministic under MockClock.

A scripted httpx transport plays the server: each request takes the next
scripted response, whose body is a list of byte chunks and timed steps. Time
only moves through trio sleeps, so every reconnection delay is exact.
"""

from __future__ import annotations

import importlib
import itertools
import math
import random
import re
import sys
import zlib
from collections.abc import AsyncIterator, Sequence

import attrs
import httpx
import pytest
import trio
import trio.testing

from trio_sse import MessageEvent
from trio_sse._parser import ParseError
from trio_sse.client import (
    ConnectTimeout,
    EventSource,
    EventSourceError,
    NetworkError,
    ReadTimeout,
    backoff_delay,
    open_event_source,
)

URL = "http://sse.test/events"


@attrs.frozen
class Pause:
    """A body step: the server sends nothing for this many seconds."""

    seconds: float


HANG = Pause(math.inf)


class Drop:
    """A body step: the connection breaks."""


DROP = Drop()


@attrs.define
class Reply:
    """One scripted answer to one request."""

    body: Sequence[bytes | Pause | Drop] = ()
    status: int = 200
    content_type: str | None = "text/event-stream; charset=utf-8"
    extra_headers: Sequence[tuple[str, str]] = ()
    #: Raised instead of answering (a failed connection).
    error: Exception | None = None
    #: Seconds before the response headers come.
    delay: float = 0.0


@attrs.define(eq=False)
class ScriptedBody(httpx.AsyncByteStream):
    steps: Sequence[bytes | Pause | Drop]
    closed: bool = False
    finished: bool = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for step in self.steps:
            if isinstance(step, Pause):
                await trio.sleep(step.seconds)
            elif isinstance(step, Drop):
                raise httpx.ReadError("connection reset by peer")
            else:
                yield step
        self.finished = True

    async def aclose(self) -> None:
        self.closed = True


@attrs.define(eq=False)
class ScriptedTransport(httpx.AsyncBaseTransport):
    """Answers requests in order with ``replies``; hangs once they run out."""

    replies: list[Reply]
    requests: list[httpx.Request] = attrs.Factory(list)
    times: list[float] = attrs.Factory(list)
    bodies: list[ScriptedBody] = attrs.Factory(list)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        self.times.append(trio.current_time())
        if not self.replies:
            await trio.sleep_forever()
        reply = self.replies.pop(0)
        await trio.sleep(reply.delay)
        if reply.error is not None:
            raise reply.error
        headers = list(reply.extra_headers)
        if reply.content_type is not None:
            headers.append(("content-type", reply.content_type))
        body = ScriptedBody(reply.body)
        self.bodies.append(body)
        return httpx.Response(reply.status, headers=headers, stream=body)

    def gaps(self) -> list[float]:
        """Seconds between consecutive requests."""
        return [b - a for a, b in itertools.pairwise(self.times)]


def scripted(*replies: Reply) -> tuple[ScriptedTransport, httpx.AsyncClient]:
    transport = ScriptedTransport(list(replies))
    return transport, httpx.AsyncClient(transport=transport)


async def take(source: EventSource, n: int) -> list[MessageEvent]:
    return [await source.__anext__() for _ in range(n)]


# -- the delay computation ---------------------------------------------------


def test_backoff_first_reconnection_waits_exactly_the_reconnection_time() -> None:
    rng = random.Random(1)
    assert backoff_delay(3.0, 1, 60.0, rng) == 3.0
    assert backoff_delay(0.2, 1, 60.0, rng) == 0.2
    assert backoff_delay(0.0, 1, 60.0, rng) == 0.0


def test_backoff_grows_with_jitter_in_the_upper_half() -> None:
    rng = random.Random(7)
    for failures in range(2, 8):
        ceiling = 1.0 * 2 ** (failures - 1)
        delays = [backoff_delay(1.0, failures, 1000.0, rng) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        # Jitter: the delays actually differ.
        assert len(set(delays)) > 100


def test_backoff_is_capped_and_never_overflows() -> None:
    rng = random.Random(3)
    for failures in (7, 50, 10_000):
        delay = backoff_delay(1.0, failures, 60.0, rng)
        assert 30.0 <= delay <= 60.0
    # The cap applies to the server's retry too.
    assert backoff_delay(600.0, 1, 60.0, rng) == 60.0


def test_backoff_has_a_floor_after_retry_zero() -> None:
    rng = random.Random(5)
    assert backoff_delay(0.0, 1, 60.0, rng) == 0.0
    assert 0.1 <= backoff_delay(0.0, 2, 60.0, rng) <= 0.2


def test_backoff_is_reproducible_with_a_seed() -> None:
    first = [backoff_delay(1.0, n, 60.0, random.Random(42)) for n in range(1, 10)]
    again = [backoff_delay(1.0, n, 60.0, random.Random(42)) for n in range(1, 10)]
    assert first == again


# -- events and headers ------------------------------------------------------


async def test_events_are_parsed_across_chunks() -> None:
    _transport, client = scripted(
        Reply(
            [
                b"event: greet\nda",
                b"ta: hello\nid: 1\n\ndata: line one\r\ndata: line two\r\n",
                b'\r\ndata: {"n": 1}\n\n',
                HANG,
            ]
        )
    )
    async with client, open_event_source(URL, client=client) as source:
        events = await take(source, 3)
    assert events == [
        MessageEvent("greet", "hello", "1"),
        MessageEvent("message", "line one\nline two", "1"),
        MessageEvent("message", '{"n": 1}', "1"),
    ]


async def test_request_headers() -> None:
    transport, client = scripted(Reply([b"data: x\n\n", HANG]))
    async with (
        client,
        open_event_source(
            URL, client=client, headers={"Authorization": "Bearer t"}
        ) as source,
    ):
        await take(source, 1)
    headers = transport.requests[0].headers
    assert headers["accept"] == "text/event-stream"
    assert headers["cache-control"] == "no-cache"
    assert headers["authorization"] == "Bearer t"
    assert "last-event-id" not in headers


async def test_initial_last_event_id_is_sent() -> None:
    transport, client = scripted(Reply([b"data: x\n\n", HANG]))
    async with client, open_event_source(URL, client=client, last_event_id="41") as s:
        assert s.last_event_id == "41"
        event = await s.__anext__()
    assert transport.requests[0].headers["last-event-id"] == "41"
    # Events without an id carry the one the source resumed from.
    assert event.last_event_id == "41"


async def test_non_ascii_last_event_id_is_sent_as_utf8(
    autojump_clock: trio.testing.MockClock,
) -> None:
    transport, client = scripted(
        Reply(["id: ünï ✓\ndata: a\n\n".encode()]),
        Reply([b"data: b\n\n", HANG]),
    )
    async with client, open_event_source(URL, client=client) as source:
        await take(source, 2)
        assert source.last_event_id == "ünï ✓"
    raw = dict(transport.requests[1].headers.raw)
    assert raw[b"Last-Event-ID"] == "ünï ✓".encode()


async def test_compressed_stream_is_decoded_incrementally(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # A proxy may gzip the stream; each event is flushed on its own.
    compressor = zlib.compressobj(wbits=31)
    first = compressor.compress(b"data: a\n\n") + compressor.flush(zlib.Z_SYNC_FLUSH)
    second = compressor.compress(b"data: b\n\n") + compressor.flush(zlib.Z_SYNC_FLUSH)
    _, client = scripted(
        Reply(
            [first, Pause(100), second, HANG],
            extra_headers=[("content-encoding", "gzip")],
        )
    )
    async with client, open_event_source(URL, client=client, timeout=None) as source:
        # Each event arrives when its own chunk does.
        assert (await source.__anext__()).data == "a"
        assert trio.current_time() == 0
        assert (await source.__anext__()).data == "b"
        assert trio.current_time() == 100


async def test_nothing_connects_before_the_first_event_is_awaited() -> None:
    transport, client = scripted(Reply([b"data: x\n\n"]))
    async with client, open_event_source(URL, client=client):
        await trio.testing.wait_all_tasks_blocked()
    assert transport.requests == []


# -- reconnection ------------------------------------------------------------


async def test_reconnects_after_end_of_stream_with_last_event_id(
    autojump_clock: trio.testing.MockClock,
) -> None:
    transport, client = scripted(
        Reply([b"id: 1\ndata: a\n\nid: 2\ndata: b\n\n"]),
        Reply([b"id: 3\ndata: c\n\n", HANG]),
    )
    async with client, open_event_source(URL, client=client) as source:
        events = await take(source, 3)
        assert source.reconnects == 1
        assert source.last_error is None
    assert [e.data for e in events] == ["a", "b", "c"]
    assert transport.requests[1].headers["last-event-id"] == "2"
    # The default reconnection time, exactly (the first retry has no jitter).
    assert transport.gaps() == [3.0]


async def test_server_retry_field_wins(autojump_clock: trio.testing.MockClock) -> None:
    transport, client = scripted(
        Reply([b"retry: 250\n\ndata: a\n\n"]),
        Reply([b"data: b\n\n"]),
        Reply([b"data: c\n\n", HANG]),
    )
    async with client, open_event_source(URL, client=client, retry=10.0) as source:
        assert source.retry == 10.0
        await take(source, 3)
        assert source.retry == 0.25
    # retry persists across connections, like a browser's reconnection time.
    assert transport.gaps() == [0.25, 0.25]


async def test_retry_is_capped_by_max_retry(
    autojump_clock: trio.testing.MockClock,
) -> None:
    transport, client = scripted(
        Reply([b"retry: 3600000\ndata: a\n\n"]),
        Reply([b"data: b\n\n", HANG]),
    )
    async with client, open_event_source(URL, client=client, max_retry=5.0) as s:
        await take(s, 2)
    assert transport.gaps() == [5.0]


async def test_backoff_on_repeated_failures_then_reset(
    autojump_clock: trio.testing.MockClock,
) -> None:
    refused = httpx.ConnectError("connection refused")
    transport, client = scripted(
        Reply([b"data: a\n\n", DROP]),
        *[Reply(error=refused) for _ in range(6)],
        Reply([b"data: b\n\n"]),
        Reply([b"data: c\n\n", HANG]),
    )
    async with (
        client,
        open_event_source(
            URL, client=client, retry=1.0, max_retry=20.0, rng=random.Random(9)
        ) as source,
    ):
        await take(source, 3)
        assert source.reconnects == 8
    expected_rng = random.Random(9)
    expected = [backoff_delay(1.0, n, 20.0, expected_rng) for n in range(1, 8)]
    gaps = transport.gaps()
    assert gaps[:7] == pytest.approx(expected)
    assert gaps[0] == 1.0
    assert all(a < b for a, b in zip(gaps[2:5], gaps[4:7], strict=True)), gaps
    assert max(gaps) <= 20.0
    assert gaps[5] >= 10.0  # the 6th reconnection is well into the cap
    # A successful connection reset the backoff: plain reconnection time.
    assert gaps[7] == 1.0


async def test_network_error_mid_stream_reconnects(
    autojump_clock: trio.testing.MockClock,
) -> None:
    transport, client = scripted(
        Reply([b"id: 1\ndata: a\n\n", DROP]),
        Reply([b"data: b\n\n", HANG]),
    )
    async with client, open_event_source(URL, client=client, retry=0.5) as source:
        assert [e.data for e in await take(source, 2)] == ["a", "b"]
        assert isinstance(source.last_error, NetworkError)
        assert isinstance(source.last_error.__cause__, httpx.ReadError)
        assert source.last_error.url == URL
    assert transport.requests[1].headers["last-event-id"] == "1"
    assert transport.gaps() == [0.5]


async def test_unterminated_event_at_end_of_stream_is_discarded(
    autojump_clock: trio.testing.MockClock,
) -> None:
    transport, client = scripted(
        Reply([b"data: a\n\nid: 9\ndata: half"]),
        Reply([b"\n\ndata: b\n\n", HANG]),
    )
    async with client, open_event_source(URL, client=client) as source:
        events = await take(source, 2)
    # The half event (and its id) died with the first connection; the blank
    # line that starts the second stream dispatches nothing.
    assert events == [MessageEvent("message", "a"), MessageEvent("message", "b")]
    assert "last-event-id" not in transport.requests[1].headers


async def test_read_timeout_counts_as_a_dropped_connection(
    autojump_clock: trio.testing.MockClock,
) -> None:
    transport, client = scripted(
        Reply([b"data: a\n\n", HANG]),
        Reply([b"data: b\n\n", HANG]),
    )
    async with (
        client,
        open_event_source(URL, client=client, timeout=10.0, retry=1.0) as source,
    ):
        await take(source, 2)
        assert isinstance(source.last_error, ReadTimeout)
    assert transport.gaps() == [11.0]
    assert transport.bodies[0].closed


async def test_keep_alive_comments_reset_the_read_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    _transport, client = scripted(
        Reply(
            [
                b"data: a\n\n",
                Pause(8),
                b":\n",
                Pause(8),
                b": keep-alive\n",
                Pause(8),
                b"data: b\n\n",
                HANG,
            ]
        )
    )
    async with client, open_event_source(URL, client=client, timeout=10.0) as s:
        await take(s, 2)
        assert s.reconnects == 0
    assert trio.current_time() == 24.0


async def test_no_timeout_waits_forever(autojump_clock: trio.testing.MockClock) -> None:
    _transport, client = scripted(
        Reply([b"data: a\n\n", Pause(10_000), b"data: b\n\n"])
    )
    async with client, open_event_source(URL, client=client, timeout=None) as s:
        await take(s, 2)
        assert s.reconnects == 0


async def test_slow_response_headers_time_out(
    autojump_clock: trio.testing.MockClock,
) -> None:
    transport, client = scripted(
        Reply([b"data: never\n\n"], delay=100.0),
        Reply([b"data: b\n\n", HANG]),
    )
    async with (
        client,
        open_event_source(URL, client=client, timeout=5.0, retry=1.0) as source,
    ):
        assert (await source.__anext__()).data == "b"
        assert isinstance(source.last_error, ConnectTimeout)
    assert transport.gaps() == [6.0]


async def test_initial_connection_failure_is_retried(
    autojump_clock: trio.testing.MockClock,
) -> None:
    transport, client = scripted(
        Reply(error=httpx.ConnectError("refused")),
        Reply([b"data: a\n\n", HANG]),
    )
    async with client, open_event_source(URL, client=client, retry=2.0) as source:
        assert (await source.__anext__()).data == "a"
    assert transport.gaps() == [2.0]


# -- statuses and content types ----------------------------------------------


async def test_204_stops_for_good(autojump_clock: trio.testing.MockClock) -> None:
    transport, client = scripted(
        Reply([b"id: 1\ndata: a\n\n"]),
        Reply(status=204, content_type=None),
        Reply([b"data: never\n\n"]),
    )
    async with client, open_event_source(URL, client=client) as source:
        events = [event async for event in source]
        # Iteration stays finished.
        assert [event async for event in source] == []
    assert [e.data for e in events] == ["a"]
    assert len(transport.requests) == 2


@pytest.mark.parametrize("status", [500, 404, 401, 301])
async def test_error_status_raises_without_retry(status: int) -> None:
    transport, client = scripted(
        Reply([b"oops"], status=status, content_type="text/plain"),
        Reply([b"data: never\n\n"]),
    )
    async with client, open_event_source(URL, client=client) as source:
        with pytest.raises(EventSourceError) as info:
            await source.__anext__()
        # The error is final: iteration ends afterwards.
        assert [event async for event in source] == []
    error = info.value
    assert (error.status, error.url, error.content_type) == (status, URL, "text/plain")
    message = str(error)
    assert f"HTTP {status}" in message and URL in message and "text/plain" in message
    assert len(transport.requests) == 1
    assert transport.bodies[0].closed


@pytest.mark.parametrize("content_type", ["text/html", "application/json", None])
async def test_wrong_content_type_raises(content_type: str | None) -> None:
    transport, client = scripted(
        Reply([b"data: x\n\n"], content_type=content_type),
        Reply([b"data: never\n\n"]),
    )
    async with client, open_event_source(URL, client=client) as source:
        with pytest.raises(EventSourceError, match="content-type") as info:
            await source.__anext__()
    assert info.value.status == 200
    assert info.value.content_type == content_type
    assert URL in str(info.value) and "text/event-stream" in str(info.value)
    assert len(transport.requests) == 1


async def test_content_type_parameters_and_case_are_accepted() -> None:
    _transport, client = scripted(
        Reply([b"data: x\n\n", HANG], content_type="Text/Event-Stream ; charset=UTF-8")
    )
    async with client, open_event_source(URL, client=client) as source:
        assert (await source.__anext__()).data == "x"


async def test_retry_statuses_are_retried_with_backoff(
    autojump_clock: trio.testing.MockClock,
) -> None:
    transport, client = scripted(
        Reply(status=503, content_type="text/plain"),
        Reply(status=503, content_type="text/plain"),
        Reply([b"data: x\n\n", HANG]),
    )
    async with (
        client,
        open_event_source(
            URL, client=client, retry=1.0, retry_statuses={502, 503}
        ) as source,
    ):
        assert (await source.__anext__()).data == "x"
        assert source.reconnects == 2
    gaps = transport.gaps()
    assert gaps[0] == 1.0
    assert 1.0 <= gaps[1] <= 2.0


async def test_redirect_loop_raises() -> None:
    loop = Reply(status=302, content_type=None, extra_headers=[("location", "/")])
    _, client = scripted(*[loop] * 30)
    async with client, open_event_source(URL, client=client) as source:
        with pytest.raises(EventSourceError, match="redirect"):
            await source.__anext__()
        # Final: iteration is over, nothing is retried.
        assert [event async for event in source] == []
    assert source.reconnects == 0


async def test_redirects_are_followed() -> None:
    transport, client = scripted(
        Reply(status=307, content_type=None, extra_headers=[("location", "/moved")]),
        Reply([b"data: x\n\n", HANG]),
    )
    async with client, open_event_source(URL, client=client) as source:
        assert (await source.__anext__()).data == "x"
    assert str(transport.requests[1].url) == "http://sse.test/moved"
    assert transport.requests[1].headers["accept"] == "text/event-stream"


@pytest.mark.parametrize("url", ["ftp://example.invalid/x", "http://[::1/x"])
async def test_unusable_url_raises_at_once(url: str) -> None:
    async with open_event_source(url) as source:
        with pytest.raises(EventSourceError, match=re.escape(url)) as info:
            await source.__anext__()
        assert info.value.status is None
        assert [event async for event in source] == []
        assert source.reconnects == 0


def test_missing_httpx_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "httpx", None)
    monkeypatch.delitem(sys.modules, "trio_sse.client")
    with pytest.raises(ImportError, match=re.escape("pip install trio-sse[client]")):
        importlib.import_module("trio_sse.client")


# -- giving up ---------------------------------------------------------------


async def test_max_reconnects_zero_ends_with_the_stream(
    autojump_clock: trio.testing.MockClock,
) -> None:
    transport, client = scripted(Reply([b"data: a\n\n"]), Reply([b"data: b\n\n"]))
    async with client, open_event_source(URL, client=client, max_reconnects=0) as s:
        assert [e.data async for e in s] == ["a"]
    assert len(transport.requests) == 1


async def test_max_reconnects_raises_the_last_network_error(
    autojump_clock: trio.testing.MockClock,
) -> None:
    refused = httpx.ConnectError("connection refused")
    transport, client = scripted(*[Reply(error=refused) for _ in range(5)])
    async with client, open_event_source(URL, client=client, max_reconnects=2) as s:
        with pytest.raises(NetworkError, match="connection refused") as info:
            await s.__anext__()
        assert s.reconnects == 2
    assert isinstance(info.value.__cause__, httpx.ConnectError)
    assert len(transport.requests) == 3


async def test_oversized_event_raises_parse_error() -> None:
    transport, client = scripted(Reply([b"data: " + b"x" * 100 + b"\n\n", HANG]))
    async with client, open_event_source(URL, client=client, max_event_size=50) as s:
        with pytest.raises(ParseError):
            await s.__anext__()
    assert len(transport.requests) == 1
    assert transport.bodies[0].closed


# -- state exposed -----------------------------------------------------------


async def test_last_event_id_follows_the_events_handed_out() -> None:
    _transport, client = scripted(
        Reply([b"id: 1\ndata: a\n\nid: 2\ndata: b\n\nid: 3\n\n", HANG])
    )
    async with client, open_event_source(URL, client=client) as source:
        assert source.last_event_id == ""
        await source.__anext__()
        # "b" is parsed but not handed out yet: resuming must not skip it.
        assert source.last_event_id == "1"
        await source.__anext__()
        # The id-only block after "b" committed id 3.
        assert source.last_event_id == "3"


async def test_invalid_arguments() -> None:
    for kwargs in (
        {"retry": -1.0},
        {"max_retry": -1.0},
        {"timeout": 0.0},
        {"max_reconnects": -1},
    ):
        with pytest.raises(ValueError):
            async with open_event_source(URL, **kwargs):  # type: ignore[arg-type]
                pass  # pragma: no cover


# -- structure: closing and cancellation -------------------------------------


async def test_leaving_the_block_closes_the_response_not_a_passed_client() -> None:
    transport, client = scripted(Reply([b"data: a\n\n", HANG]))
    async with client:
        async with open_event_source(URL, client=client) as source:
            await source.__anext__()
            assert source.connected
        assert not source.connected
        assert transport.bodies[0].closed
        assert not client.is_closed
        with pytest.raises(trio.ClosedResourceError):
            await source.__anext__()


async def test_leaving_the_block_closes_its_own_client(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    created: list[httpx.AsyncClient] = []
    transport = ScriptedTransport([Reply([b"data: a\n\n", HANG])])
    real_client = httpx.AsyncClient

    def make_client() -> httpx.AsyncClient:
        client = real_client(transport=transport)
        created.append(client)
        return client

    monkeypatch.setattr(httpx, "AsyncClient", make_client)
    async with open_event_source(URL) as source:
        await source.__anext__()
    assert created[0].is_closed
    assert transport.bodies[0].closed


async def test_cancellation_propagates_and_closes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    transport, client = scripted(Reply([b"data: a\n\n", HANG]))
    async with client:
        with trio.move_on_after(5) as scope:
            async with open_event_source(URL, client=client) as source:
                await source.__anext__()
                await source.__anext__()  # waits forever
        assert scope.cancelled_caught
        assert transport.bodies[0].closed
        assert not source.connected


async def test_cancellation_during_backoff_sleep_propagates(
    autojump_clock: trio.testing.MockClock,
) -> None:
    transport, client = scripted(
        *[Reply(error=httpx.ConnectError("no")) for _ in range(3)]
    )
    async with client:
        with trio.move_on_after(1.5) as scope:
            async with open_event_source(URL, client=client, retry=1.0) as source:
                await source.__anext__()
        assert scope.cancelled_caught
    assert len(transport.requests) == 2


async def test_closing_mid_stream_leaves_no_async_generator_behind() -> None:
    # httpx reads bodies through nested async generators; the client unwinds
    # them on close (trio would warn about each one left to the garbage
    # collector, and warnings are errors here).
    transport, client = scripted(Reply([b"data: a\n\n", b"data: b\n\n", HANG]))
    async with client, open_event_source(URL, client=client) as source:
        await source.__anext__()
    assert transport.bodies[0].closed
