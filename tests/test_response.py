"""SseResponse, sse_channel() and last_event_id(), driven in memory."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import trio
import trio.testing

from trio_sse import (
    Broadcaster,
    Event,
    Sender,
    ShutdownSignal,
    SseConfig,
    SseResponse,
    last_event_id,
    sse_channel,
)
from trio_sse.testing import open_stream

Message = dict[str, Any]


class Probe:
    """Records what happens to a stream: items taken, closing, cancellation."""

    def __init__(self) -> None:
        self.closed_at: float | None = None
        self.cancelled = False
        self.closed = trio.Event()

    def close(self) -> None:
        self.closed_at = trio.current_time()
        self.closed.set()


async def endless(probe: Probe, *items: Any) -> AsyncIterator[Any]:
    """Yield ``items`` then wait forever, recording cancellation and closing."""
    try:
        for item in items:
            yield item
        await trio.sleep_forever()
    except trio.Cancelled:
        probe.cancelled = True
        raise
    finally:
        probe.close()


async def timed(*schedule: tuple[float, Any]) -> AsyncIterator[Any]:
    """Yield each item at its absolute (virtual) time."""
    for at, item in schedule:
        await trio.sleep_until(at)
        yield item


# --- headers, status, opening ------------------------------------------------


async def test_default_headers_and_status() -> None:
    probe = Probe()
    async with open_stream(SseResponse(endless(probe)), "/") as stream:
        assert stream.status == 200
        assert stream.headers == {
            "content-type": "text/event-stream; charset=utf-8",
            "cache-control": "no-cache",
            "x-accel-buffering": "no",
            "connection": "keep-alive",
        }


async def test_no_connection_header_on_http2() -> None:
    probe = Probe()
    response = SseResponse(endless(probe))
    async with open_stream(response, "/", http_version="2") as stream:
        assert "connection" not in stream.headers
        assert stream.headers["content-type"] == "text/event-stream; charset=utf-8"


async def test_http10_gets_connection_keep_alive() -> None:
    probe = Probe()
    response = SseResponse(endless(probe))
    async with open_stream(response, "/", http_version="1.0") as stream:
        assert stream.headers["connection"] == "keep-alive"


async def test_status_and_extra_headers() -> None:
    probe = Probe()
    response = SseResponse(
        endless(probe),
        status=201,
        headers={"X-Trace": "abc", "Cache-Control": "no-store"},
    )
    async with open_stream(response, "/") as stream:
        assert stream.status == 201
        assert stream.headers["x-trace"] == "abc"
        assert stream.headers["cache-control"] == "no-store"
        assert stream.headers["x-accel-buffering"] == "no"


async def test_headers_as_pairs_and_own_connection_header() -> None:
    probe = Probe()
    response = SseResponse(
        endless(probe), headers=[(b"Connection", b"close"), ("x-a", "1")]
    )
    async with open_stream(response, "/") as stream:
        assert stream.headers["connection"] == "close"
        assert stream.headers["x-a"] == "1"


def test_stream_must_be_async_iterable() -> None:
    async def gen() -> AsyncIterator[str]:
        yield "x"  # pragma: no cover

    with pytest.raises(TypeError, match=r"got function \(call it"):
        SseResponse(gen)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="async iterable of events, got list"):
        SseResponse(["a"])  # type: ignore[arg-type]


def test_bad_header_and_status_rejected() -> None:
    with pytest.raises(ValueError, match="CR, LF or NUL"):
        SseResponse(timed(), headers={"x-a": "1\r\nx-b: 2"})
    with pytest.raises(TypeError, match="status"):
        SseResponse(timed(), status="200")  # type: ignore[arg-type]


async def test_opening_comment_sent_at_once(autojump_clock: trio.abc.Clock) -> None:
    async with open_stream(SseResponse(timed((100, "late"))), "/") as stream:
        assert await stream.receive_chunk() == b":\n"
        assert trio.current_time() == 0
        assert stream.comments == [""]


async def test_opening_retry_line_from_config() -> None:
    response = SseResponse(timed(), config=SseConfig(retry=2.5))
    async with open_stream(response, "/") as stream:
        assert await stream.receive_chunk() == b"retry: 2500\n\n"
        assert stream.retry == 2500


async def test_non_http_scope_rejected() -> None:
    response = SseResponse(timed())

    async def receive() -> Message:
        raise AssertionError

    async def send(message: Message) -> None:
        raise AssertionError

    with pytest.raises(TypeError, match="'http' scopes only"):
        await response({"type": "websocket"}, receive, send)


async def test_response_serves_once() -> None:
    response = SseResponse(timed((0, "a")))
    async with open_stream(response, "/") as stream:
        assert [e.data async for e in stream] == ["a"]
    with pytest.raises(RuntimeError, match="one request only"):
        async with open_stream(response, "/"):
            pass  # pragma: no cover


# --- items -------------------------------------------------------------------


async def test_event_str_and_bytes_items() -> None:
    items = [Event("one", id="1", event="x"), "two", b"data: three\n\n"]
    async with open_stream(SseResponse(timed(*((0, i) for i in items))), "/") as s:
        got = [(e.type, e.data, e.last_event_id) async for e in s]
    assert got == [
        ("x", "one", "1"),
        ("message", "two", "1"),
        ("message", "three", "1"),
    ]
    assert s.complete


async def test_bad_item_is_logged_once_and_skipped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def items() -> AsyncIterator[object]:
        for item in ("ok", 42, b"data: no blank line\n", {"a": 1}, "after"):
            yield item

    async with open_stream(SseResponse(items()), "/") as s:  # type: ignore[arg-type]
        assert [e.data async for e in s] == ["ok", "after"]
        assert s.complete
    records = [r for r in caplog.records if r.name == "trio_sse"]
    assert len(records) == 1
    assert records[0].levelno == logging.WARNING
    assert "int" in records[0].getMessage()
    assert "Event, str or bytes" in records[0].getMessage()


async def test_stream_error_is_logged_and_ends_stream_only(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def broken() -> AsyncIterator[str]:
        yield "before"
        raise KeyError("boom")

    async with open_stream(SseResponse(broken()), "/") as s:
        assert [e.data async for e in s] == ["before"]
        assert s.complete
    (record,) = [r for r in caplog.records if r.name == "trio_sse"]
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], KeyError)


async def test_async_iterable_without_aclose_and_iterator_closed() -> None:
    closed: list[str] = []

    class Source:
        def __init__(self) -> None:
            self.items = ["a", "b"]

        def __aiter__(self) -> Source:
            return self

        async def __anext__(self) -> str:
            await trio.lowlevel.checkpoint()
            if not self.items:
                raise StopAsyncIteration
            return self.items.pop(0)

        async def aclose(self) -> None:
            closed.append("source")

    async with open_stream(SseResponse(Source()), "/") as s:
        assert [e.data async for e in s] == ["a", "b"]
    assert closed == ["source"]


# --- keep-alive --------------------------------------------------------------


async def test_keep_alive_every_interval(autojump_clock: trio.abc.Clock) -> None:
    probe = Probe()
    config = SseConfig(keep_alive=15)
    async with open_stream(SseResponse(endless(probe), config=config), "/") as s:
        assert await s.receive_chunk() == b":\n"
        times = []
        for _ in range(4):
            assert await s.receive_chunk() == b":\n"
            times.append(trio.current_time())
        assert times == [15, 30, 45, 60]
        assert s.comments == [""] * 5
    assert not probe.cancelled or probe.closed_at == 60


async def test_keep_alive_never_cancels_the_generator(
    autojump_clock: trio.abc.Clock,
) -> None:
    cancelled = []

    async def slow() -> AsyncIterator[str]:
        for i in range(3):
            try:
                await trio.sleep(40)
            except trio.Cancelled:  # pragma: no cover - the failure mode
                cancelled.append(trio.current_time())
                raise
            yield f"e{i}"

    config = SseConfig(keep_alive=15)
    async with open_stream(SseResponse(slow(), config=config), "/") as s:
        events = [(e.data, trio.current_time()) async for e in s]
    assert events == [("e0", 40), ("e1", 80), ("e2", 120)]
    assert cancelled == []
    # keep-alives at 15 and 30 after each event (opening comment first)
    assert len(s.comments) == 1 + 2 * 3


async def test_no_keep_alive_while_events_flow(autojump_clock: trio.abc.Clock) -> None:
    schedule = [(10.0 * i, f"e{i}") for i in range(1, 10)]
    config = SseConfig(keep_alive=15)
    async with open_stream(SseResponse(timed(*schedule), config=config), "/") as s:
        assert [e.data async for e in s] == [item for _, item in schedule]
    assert s.comments == [""]  # the opening comment only


async def test_keep_alive_timer_restarts_after_event(
    autojump_clock: trio.abc.Clock,
) -> None:
    probe = Probe()

    async def source() -> AsyncIterator[str]:
        await trio.sleep(10)
        yield "e"
        async for item in endless(probe):
            yield item  # pragma: no cover

    config = SseConfig(keep_alive=15)
    async with open_stream(SseResponse(source(), config=config), "/") as s:
        await s.receive_chunk()  # opening
        assert await s.receive_chunk() == b"data: e\n\n"
        assert trio.current_time() == 10
        assert await s.receive_chunk() == b":\n"
        assert trio.current_time() == 25
        assert await s.receive_chunk() == b":\n"
        assert trio.current_time() == 40


async def test_keep_alive_disabled(autojump_clock: trio.abc.Clock) -> None:
    config = SseConfig(keep_alive=None)
    async with open_stream(SseResponse(timed((1000, "e")), config=config), "/") as s:
        assert [e.data async for e in s] == ["e"]
    assert s.comments == [""]


async def test_keep_alive_on_channel_stream_loses_nothing(
    autojump_clock: trio.abc.Clock,
) -> None:
    tx, rx = trio.open_memory_channel[Any](10)
    config = SseConfig(keep_alive=5)

    async def produce() -> None:
        with tx:
            for i in range(3):
                await trio.sleep(12)
                tx.send_nowait(f"e{i}")

    response = SseResponse(rx, config=config)
    async with open_stream(response, "/") as s, trio.open_nursery() as nursery:
        nursery.start_soon(produce)
        got = [(e.data, trio.current_time()) async for e in s]
    assert got == [("e0", 12), ("e1", 24), ("e2", 36)]
    assert len(s.comments) == 1 + 3 * 2


# --- coalescing --------------------------------------------------------------


async def test_ready_burst_is_one_chunk() -> None:
    probe = Probe()
    events = [Event(f"e{i}", id=str(i)) for i in range(10)]
    async with open_stream(SseResponse(endless(probe, *events)), "/") as s:
        # The writer is held in its first send while the pump fills up.
        await trio.testing.wait_all_tasks_blocked()
        first = await s.receive_chunk()
        if first == b":\n":
            first = await s.receive_chunk()
        assert first.removeprefix(b":\n") == b"".join(e.encode() for e in events)
        assert len(s.events) == 10


async def test_channel_burst_joins_opening_chunk() -> None:
    tx, rx = trio.open_memory_channel[Any](100)
    events = [Event(f"e{i}") for i in range(50)]
    for event in events:
        tx.send_nowait(event)
    tx.close()
    async with open_stream(SseResponse(rx), "/") as s:
        got = [e.data async for e in s]
    assert got == [e.data for e in events]
    assert s.chunks == [b":\n" + b"".join(e.encode() for e in events)]


async def test_coalescing_bounded_by_coalesce_bytes() -> None:
    tx, rx = trio.open_memory_channel[Any](100)
    events = [Event("x" * 94) for _ in range(20)]  # 100 bytes each
    assert all(len(e.encode()) == 102 for e in events)
    for event in events:
        tx.send_nowait(event)
    tx.close()
    config = SseConfig(coalesce_bytes=500)
    async with open_stream(SseResponse(rx, config=config), "/") as s:
        assert len([e async for e in s]) == 20
    # opening (2 bytes) + 5 events reach 500; then 5 events per chunk
    assert [len(c) for c in s.chunks] == [2 + 5 * 102] + [5 * 102] * 3


async def test_large_event_still_sent_whole() -> None:
    big = Event("y" * 1000)
    response = SseResponse(timed((0, big)), config=SseConfig(coalesce_bytes=10))
    async with open_stream(response, "/") as s:
        assert [e.data async for e in s] == [big.data]
    assert big.encode() in s.chunks


async def test_lone_event_sent_without_delay(autojump_clock: trio.abc.Clock) -> None:
    async with open_stream(SseResponse(timed((5, "a"), (7.5, "b"))), "/") as s:
        await s.receive_chunk()
        assert await s.receive_chunk() == b"data: a\n\n"
        assert trio.current_time() == 5
        assert await s.receive_chunk() == b"data: b\n\n"
        assert trio.current_time() == 7.5


# --- lifetime: disconnect, cancellation, final message -------------------------


async def test_disconnect_closes_generator_within_one_round(
    autojump_clock: trio.abc.Clock,
) -> None:
    probe = Probe()
    async with open_stream(SseResponse(endless(probe, "a")), "/") as s:
        assert (await s.__anext__()).data == "a"
        await trio.sleep(3)
        s.disconnect()
        await trio.testing.wait_all_tasks_blocked()
        assert probe.cancelled
        assert probe.closed_at == 3
    assert s.complete


async def test_final_message_on_normal_end() -> None:
    async with open_stream(SseResponse(timed((0, "a"))), "/") as s:
        assert [e.data async for e in s] == ["a"]
        assert s.complete
        with pytest.raises(trio.EndOfChannel):
            await s.receive_chunk()


async def test_final_message_when_cancelled_from_outside(
    autojump_clock: trio.abc.Clock,
) -> None:
    probe = Probe()
    sent: list[Message] = []

    async def receive() -> Message:
        await trio.sleep_forever()
        raise AssertionError  # pragma: no cover

    async def send(message: Message) -> None:
        await trio.lowlevel.checkpoint()
        sent.append(message)

    scope = {"type": "http", "http_version": "1.1", "headers": []}
    with trio.move_on_after(20):
        await SseResponse(endless(probe, "a"))(scope, receive, send)
    assert probe.cancelled
    assert probe.closed_at == 20
    assert sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}
    assert sent[0]["type"] == "http.response.start"


async def test_final_send_errors_are_ignored() -> None:
    sent: list[Message] = []

    async def receive() -> Message:
        await trio.sleep_forever()
        raise AssertionError  # pragma: no cover

    async def send(message: Message) -> None:
        if not message.get("more_body", True):
            raise RuntimeError("client went away")
        sent.append(message)

    scope = {"type": "http", "http_version": "1.1", "headers": []}
    await SseResponse(timed((0, "a")))(scope, receive, send)
    assert sent[0]["type"] == "http.response.start"
    assert b"".join(m["body"] for m in sent[1:]) == b":\ndata: a\n\n"


async def test_send_oserror_ends_response_quietly() -> None:
    probe = Probe()
    calls: list[Message] = []

    async def receive() -> Message:
        await trio.sleep_forever()
        raise AssertionError  # pragma: no cover

    async def send(message: Message) -> None:
        calls.append(message)
        if b"data: b" in message.get("body", b""):
            raise BrokenPipeError

    scope = {"type": "http", "http_version": "1.1", "headers": []}
    await SseResponse(endless(probe, "a", "b", "c"))(scope, receive, send)
    assert probe.closed_at is not None
    assert calls[-1]["more_body"] is False


# --- write timeout -------------------------------------------------------------


async def test_write_timeout_cuts_off_a_stalled_reader(
    autojump_clock: trio.abc.Clock,
) -> None:
    probe = Probe()
    items = [f"e{i}" for i in range(100)]
    config = SseConfig(write_timeout=30, keep_alive=5)
    response = SseResponse(endless(probe, *items), config=config)
    async with open_stream(response, "/") as s:
        await s.receive_chunk()  # opening; then the test stops reading
        await probe.closed.wait()
        assert probe.closed_at == 30
        assert not s.complete
    assert s.complete


async def test_write_timeout_with_a_shielded_server_write(
    autojump_clock: trio.abc.Clock,
) -> None:
    """Hypercorn writes inside a shielded scope: the stream still closes on time."""
    probe = Probe()
    release = trio.Event()
    stuck_at: list[float] = []
    sent: list[Message] = []

    async def receive() -> Message:
        await trio.sleep_forever()
        raise AssertionError  # pragma: no cover

    async def send(message: Message) -> None:
        if message.get("body", b"").startswith(b"data"):
            with trio.CancelScope(shield=True):
                stuck_at.append(trio.current_time())
                await release.wait()
        sent.append(message)

    config = SseConfig(write_timeout=10, keep_alive=3)
    response = SseResponse(endless(probe, "a", "b"), config=config)
    scope = {"type": "http", "http_version": "1.1", "headers": []}
    async with trio.open_nursery() as nursery:
        nursery.start_soon(response, scope, receive, send)
        await probe.closed.wait()
        assert stuck_at == [0]
        assert probe.closed_at == 10
        assert probe.cancelled
        await trio.sleep(5)
        release.set()
    assert trio.current_time() == 15
    assert sent[-1]["more_body"] is False


async def test_write_timeout_on_channel_stream_with_shielded_write(
    autojump_clock: trio.abc.Clock,
) -> None:
    tx, rx = trio.open_memory_channel[Any](10)
    tx.send_nowait("a")
    release = trio.Event()

    async def receive() -> Message:
        await trio.sleep_forever()
        raise AssertionError  # pragma: no cover

    async def send(message: Message) -> None:
        if message.get("more_body"):
            with trio.CancelScope(shield=True):
                await release.wait()

    response = SseResponse(rx, config=SseConfig(write_timeout=10))
    scope = {"type": "http", "http_version": "1.1", "headers": []}
    async with trio.open_nursery() as nursery:
        nursery.start_soon(response, scope, receive, send)
        await trio.sleep(10)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(trio.BrokenResourceError):
            tx.send_nowait("b")  # the response closed its end
        release.set()


async def test_one_stalled_reader_does_not_disturb_another(
    autojump_clock: trio.abc.Clock,
) -> None:
    config = SseConfig(write_timeout=10, keep_alive=None)
    bc: Broadcaster[str, Event] = Broadcaster(buffer=1000, config=config)
    stalled = bc.response(bc.subscribe("k"))
    live = bc.response(bc.subscribe("k"))
    async with open_stream(stalled, "/") as a, open_stream(live, "/") as b:
        await a.receive_chunk()
        await b.receive_chunk()
        for i in range(30):
            bc.send("k", Event(f"e{i}"))
            assert (await b.__anext__()).data == f"e{i}"
            await trio.sleep(1)
        assert bc.subscriber_count("k") == 1  # the stalled one was cut off
        assert a.disconnected is False
    assert bc.subscriber_count("k") == 0


# --- shutdown --------------------------------------------------------------------


@pytest.fixture(params=[trio.Event, ShutdownSignal], ids=["trio-event", "signal"])
def new_shutdown(request: pytest.FixtureRequest) -> Callable[[], Any]:
    """Both kinds a scope may carry: a plain trio.Event and serve()'s signal."""
    factory: Callable[[], Any] = request.param
    return factory


def with_shutdown(app: Any, shutdown: Any) -> Any:
    async def wrapped(scope: Message, receive: Any, send: Any) -> None:
        scope["trio_sse.shutdown"] = shutdown
        await app(scope, receive, send)

    return wrapped


async def test_shutdown_ends_stream_with_retry(
    autojump_clock: trio.abc.Clock, new_shutdown: Callable[[], Any]
) -> None:
    probe = Probe()
    shutdown = new_shutdown()
    config = SseConfig(shutdown_retry=0.25, keep_alive=15)
    app = with_shutdown(SseResponse(endless(probe, "a"), config=config), shutdown)
    async with open_stream(app, "/") as s:
        assert (await s.__anext__()).data == "a"
        await trio.sleep(7)
        shutdown.set()
        assert await s.receive_chunk() == b"retry: 250\n\n"
        assert trio.current_time() == 7
        with pytest.raises(trio.EndOfChannel):
            await s.receive_chunk()
        assert s.complete
        assert s.retry == 250
        assert probe.closed_at == 7


async def test_shutdown_without_retry_just_ends(
    autojump_clock: trio.abc.Clock, new_shutdown: Callable[[], Any]
) -> None:
    probe = Probe()
    shutdown = new_shutdown()
    app = with_shutdown(SseResponse(endless(probe, "a")), shutdown)
    async with open_stream(app, "/") as s:
        assert (await s.__anext__()).data == "a"
        shutdown.set()
        assert [e async for e in s] == []
        assert s.complete
        assert s.raw == b":\ndata: a\n\n"


async def test_shutdown_already_set_flushes_ready_events(
    new_shutdown: Callable[[], Any],
) -> None:
    shutdown = new_shutdown()
    shutdown.set()
    tx, rx = trio.open_memory_channel[Any](10)
    tx.send_nowait("a")
    tx.send_nowait("b")
    config = SseConfig(shutdown_retry=1)
    app = with_shutdown(SseResponse(rx, config=config), shutdown)
    async with open_stream(app, "/") as s:
        assert [e.data async for e in s] == ["a", "b"]
    assert s.raw.endswith(b"retry: 1000\n\n")


async def test_shutdown_during_a_stalled_write(
    autojump_clock: trio.abc.Clock, new_shutdown: Callable[[], Any]
) -> None:
    probe = Probe()
    shutdown = new_shutdown()
    app = with_shutdown(SseResponse(endless(probe, "a", "b")), shutdown)
    async with open_stream(app, "/") as s:
        await s.receive_chunk()
        await trio.testing.wait_all_tasks_blocked()
        shutdown.set()
        await probe.closed.wait()
        assert [e.data async for e in s] == ["a", "b"]
        assert s.complete


async def test_shutdown_signal_is_a_callback_not_a_task() -> None:
    shutdown = ShutdownSignal()
    tx, rx = trio.open_memory_channel[Any](10)
    app = with_shutdown(SseResponse(rx), shutdown)
    async with open_stream(app, "/") as s:
        tx.send_nowait("a")
        assert (await s.__anext__()).data == "a"
        assert len(shutdown._callbacks) == 1
    assert shutdown._callbacks == set()  # unregistered when the response ended


# --- sse_channel -------------------------------------------------------------------


async def test_channel_sends_until_fn_returns() -> None:
    async def fn(tx: Sender) -> None:
        await tx.send(Event("one", id="1"))
        await tx.send("two")
        await tx.send(b"data: three\n\n")

    async with open_stream(sse_channel(fn), "/") as s:
        assert [e.data async for e in s] == ["one", "two", "three"]
        assert s.complete


async def test_channel_sender_rejects_bad_items() -> None:
    errors: list[BaseException] = []

    async def fn(tx: Sender) -> None:
        try:
            await tx.send(3)  # type: ignore[arg-type]
        except TypeError as exc:
            errors.append(exc)
        await tx.send("after")

    async with open_stream(sse_channel(fn), "/") as s:
        assert [e.data async for e in s] == ["after"]
    assert len(errors) == 1
    assert "not int" in str(errors[0])


async def test_channel_disconnect_cancels_fn_promptly(
    autojump_clock: trio.abc.Clock,
) -> None:
    probe = Probe()

    async def fn(tx: Sender) -> None:
        await tx.send("hello")
        async for _ in endless(probe):
            pass  # pragma: no cover

    config = SseConfig(keep_alive=15)
    async with open_stream(sse_channel(fn, config=config), "/") as s:
        assert (await s.__anext__()).data == "hello"
        await trio.sleep(2)
        s.disconnect()
        await trio.testing.wait_all_tasks_blocked()
        assert probe.cancelled
        assert probe.closed_at == 2


async def test_channel_exception_logged_other_stream_unaffected(
    caplog: pytest.LogCaptureFixture, autojump_clock: trio.abc.Clock
) -> None:
    async def failing(tx: Sender) -> None:
        await tx.send("first")
        await trio.sleep(1)
        raise ValueError("fn broke")

    async def healthy(tx: Sender) -> None:
        for i in range(5):
            await tx.send(f"h{i}")
            await trio.sleep(1)

    async with (
        open_stream(sse_channel(failing), "/a") as a,
        open_stream(sse_channel(healthy), "/b") as b,
    ):
        assert [e.data async for e in a] == ["first"]
        assert a.complete
        assert [e.data async for e in b] == [f"h{i}" for i in range(5)]
    (record,) = [r for r in caplog.records if r.name == "trio_sse"]
    assert record.levelno == logging.ERROR
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], ValueError)
    assert "fn broke" in caplog.text


async def test_channel_backpressure(autojump_clock: trio.abc.Clock) -> None:
    sent = 0

    async def fn(tx: Sender) -> None:
        nonlocal sent
        for i in range(1000):
            await tx.send(f"e{i}")
            sent += 1

    async with open_stream(sse_channel(fn), "/") as s:
        await s.receive_chunk()
        await trio.testing.wait_all_tasks_blocked()
        held = sent
        assert 0 < held < 100  # bounded by the small internal buffer
        got = [e.data async for e in s]
    assert got == [f"e{i}" for i in range(1000)]


async def test_channel_status_and_headers() -> None:
    async def fn(tx: Sender) -> None:
        await tx.send("x")

    response = sse_channel(fn, status=202, headers={"x-y": "z"})
    async with open_stream(response, "/") as s:
        assert s.status == 202
        assert s.headers["x-y"] == "z"


# --- broadcaster --------------------------------------------------------------------


async def test_broadcaster_response_unsubscribes_on_disconnect() -> None:
    bc: Broadcaster[str, Event] = Broadcaster()
    async with open_stream(bc.response(bc.subscribe("room")), "/") as s:
        await s.receive_chunk()
        assert bc.subscriber_count("room") == 1
        assert bc.send("room", Event("hi")) == 1
        event = await s.__anext__()
        assert event.data == "hi"
        assert event.last_event_id  # the broadcaster's id
    assert bc.subscriber_count("room") == 0


async def test_broadcaster_channel() -> None:
    bc: Broadcaster[str, Event] = Broadcaster(config=SseConfig(retry=1))

    async def fn(tx: Sender) -> None:
        async with bc.subscribe("k") as sub:
            async for item in sub:
                await tx.send(item)

    async with open_stream(bc.channel(fn), "/") as s:
        assert await s.receive_chunk() == b"retry: 1000\n\n"
        await trio.testing.wait_all_tasks_blocked()
        bc.send("k", Event("x"))
        assert (await s.__anext__()).data == "x"
    assert bc.subscriber_count("k") == 0


# --- last_event_id ------------------------------------------------------------------


def scope_with(headers: list[tuple[bytes, bytes]], query: bytes = b"") -> Message:
    return {"type": "http", "headers": headers, "query_string": query}


@pytest.mark.parametrize(
    ("headers", "query", "expected"),
    [
        ([], b"", None),
        ([(b"last-event-id", b"42")], b"", "42"),
        ([(b"Last-Event-ID", b"7-3")], b"", "7-3"),
        ([], b"lastEventId=9", "9"),
        ([], b"a=1&lastEventId=x%20y", "x y"),
        ([(b"last-event-id", b"h")], b"lastEventId=q", "h"),
        ([(b"last-event-id", b"")], b"", None),
        ([(b"last-event-id", b"")], b"lastEventId=q", "q"),
        ([(b"last-event-id", b"x" * 256)], b"", "x" * 256),
        ([(b"last-event-id", b"x" * 257)], b"", None),
        ([(b"last-event-id", b"x" * 257)], b"lastEventId=q", "q"),
        ([], b"lastEventId=" + b"x" * 257, None),
        ([], b"lastEventId=a%0Ab", None),
        ([], b"lastEventId=a%0Db", None),
        ([], b"lastEventId=a%00b", None),
        ([(b"last-event-id", "é".encode())], b"", "é"),
        ([(b"last-event-id", b"\xff")], b"", None),
        ([], b"lastEventId=%FF", None),
        ([], b"lasteventid=1", None),
    ],
)
def test_last_event_id_from_scope(
    headers: list[tuple[bytes, bytes]], query: bytes, expected: str | None
) -> None:
    assert last_event_id(scope_with(headers, query)) == expected


def test_last_event_id_logs_ignored_values(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="trio_sse")
    assert last_event_id(scope_with([(b"last-event-id", b"a\x00b")])) is None
    assert "ignoring" in caplog.text


def test_last_event_id_from_object_with_scope() -> None:
    class Request:
        scope = scope_with([(b"last-event-id", b"5")])

    assert last_event_id(Request()) == "5"


def test_last_event_id_from_starlette_request() -> None:
    from starlette.requests import Request

    request = Request(scope_with([(b"last-event-id", b"s1")], b"lastEventId=q"))
    assert last_event_id(request) == "s1"
    assert last_event_id(Request(scope_with([], b"lastEventId=q"))) == "q"


def test_last_event_id_needs_a_scope() -> None:
    # Framework request objects carry their scope; the edges
    # (trio_sse.starlette, trio_sse.quart) know their own request types.
    with pytest.raises(TypeError, match=r"ASGI scope or a request with a \.scope"):
        last_event_id(object())


async def test_sender_kept_after_the_response_is_broken() -> None:
    kept: list[Sender] = []

    async def fn(tx: Sender) -> None:
        kept.append(tx)
        await tx.send("only")

    async with open_stream(sse_channel(fn), "/") as s:
        assert [e.data async for e in s] == ["only"]
    with pytest.raises(trio.BrokenResourceError):
        await kept[0].send("late")


async def test_generator_that_never_awaits_does_not_starve_others() -> None:
    ticks = 0
    seen_ticks: list[int] = []

    async def eager() -> AsyncIterator[str]:
        for i in range(200):
            seen_ticks.append(ticks)
            yield f"e{i}"

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(ticker)
        async with open_stream(SseResponse(eager()), "/") as s:
            assert len([e async for e in s]) == 200
        nursery.cancel_scope.cancel()
    # The pump gives way at least once per bufferful of items (the ticker
    # may run just before or just after each of those yields).
    window = 40
    runs = [seen_ticks[i : i + window] for i in range(0, 200 - window)]
    assert all(run[0] != run[-1] for run in runs)
    assert seen_ticks[-1] >= 200 // window


async def test_send_that_never_completes(autojump_clock: trio.abc.Clock) -> None:
    probe = Probe()
    sent: list[Message] = []

    async def receive() -> Message:
        await trio.sleep_forever()
        raise AssertionError  # pragma: no cover

    async def send(message: Message) -> None:
        sent.append(message)
        if message["type"] == "http.response.body":
            await trio.sleep_forever()

    config = SseConfig(write_timeout=30)
    scope = {"type": "http", "http_version": "1.1", "headers": []}
    await SseResponse(endless(probe, "a"), config=config)(scope, receive, send)
    assert probe.closed_at == 30
    # the final message was tried, shielded, for one second
    assert sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}
    assert trio.current_time() == 31


async def test_broadcast_burst_is_one_chunk() -> None:
    bc: Broadcaster[str, Event] = Broadcaster()
    async with open_stream(bc.response(bc.subscribe("k")), "/") as s:
        await s.receive_chunk()
        await trio.testing.wait_all_tasks_blocked()
        events = [Event(f"e{i}", id=str(i)) for i in range(10)]
        for event in events:
            bc.send("k", event)
        assert await s.receive_chunk() == b"".join(e.encode() for e in events)


async def test_broadcast_keep_alive_and_shutdown(
    autojump_clock: trio.abc.Clock,
) -> None:
    bc: Broadcaster[str, Event] = Broadcaster(
        config=SseConfig(keep_alive=10, shutdown_retry=5)
    )
    shutdown = trio.Event()
    app = with_shutdown(bc.response(bc.subscribe("k")), shutdown)
    async with open_stream(app, "/") as s:
        await s.receive_chunk()
        assert await s.receive_chunk() == b":\n"
        assert trio.current_time() == 10
        bc.send("k", Event("x", id="1"))
        assert await s.receive_chunk() == b"id: 1\ndata: x\n\n"
        await trio.sleep(4)
        bc.send("k", Event("y", id="2"))
        shutdown.set()
        rest = []
        while True:
            try:
                rest.append(await s.receive_chunk())
            except trio.EndOfChannel:
                break
        assert b"".join(rest) == b"id: 2\ndata: y\n\nretry: 5000\n\n"
        assert trio.current_time() == 14
        assert bc.subscriber_count("k") == 0


async def test_slow_but_progressing_client_is_not_cut_off(
    autojump_clock: trio.abc.Clock,
) -> None:
    """Each write takes 20 s of a 30 s limit: the total far exceeds the limit."""
    sent: list[tuple[float, bytes]] = []

    async def receive() -> Message:
        await trio.sleep_forever()
        raise AssertionError  # pragma: no cover

    async def send(message: Message) -> None:
        if message.get("more_body"):
            await trio.sleep(20)
            sent.append((trio.current_time(), message["body"]))

    config = SseConfig(write_timeout=30, keep_alive=None)
    scope = {"type": "http", "http_version": "1.1", "headers": []}
    schedule = [(25.0 * i, f"e{i}") for i in range(6)]
    await SseResponse(timed(*schedule), config=config)(scope, receive, send)
    assert b"".join(body for _, body in sent).count(b"data:") == 6
    assert trio.current_time() > 120


async def test_write_timeout_counts_from_the_start_of_the_stuck_write(
    autojump_clock: trio.abc.Clock,
) -> None:
    probe = Probe()
    release = trio.Event()

    async def receive() -> Message:
        await trio.sleep_forever()
        raise AssertionError  # pragma: no cover

    async def send(message: Message) -> None:
        if b"stuck" in message.get("body", b""):
            with trio.CancelScope(shield=True):
                await release.wait()

    async def source() -> AsyncIterator[str]:
        try:
            await trio.sleep(47)  # the watchdog has checked, idle, at 30
            yield "stuck"
            await trio.sleep_forever()
        finally:
            probe.close()

    config = SseConfig(write_timeout=30, keep_alive=None)
    scope = {"type": "http", "http_version": "1.1", "headers": []}
    async with trio.open_nursery() as nursery:
        nursery.start_soon(SseResponse(source(), config=config), scope, receive, send)
        await probe.closed.wait()
        assert probe.closed_at == 77
        release.set()


async def test_anyio_stream_goes_through_the_pump() -> None:
    import anyio

    send, receive = anyio.create_memory_object_stream[str](10)
    send.send_nowait("a")
    send.send_nowait("b")
    send.close()
    async with open_stream(SseResponse(receive), "/") as s:
        assert [e.data async for e in s] == ["a", "b"]


# --- HEAD, sources, hostile items -----------------------------------------------


async def test_head_answers_the_headers_and_ends() -> None:
    from trio_sse import Broadcaster

    bc: Broadcaster[str, str] = Broadcaster()
    stream = bc.subscribe("k")
    with trio.fail_after(5):
        async with open_stream(bc.response(stream), "/", method="HEAD") as s:
            assert s.status == 200
            assert s.headers["content-type"].startswith("text/event-stream")
            assert [e async for e in s] == []
            assert s.complete
    assert stream.closed and bc.subscriber_count("k") == 0


async def test_safe_channel_streams() -> None:
    # @trio.as_safe_channel's channel has receive() but no receive_nowait().
    @trio.as_safe_channel
    async def letters() -> AsyncIterator[str]:
        for letter in "abc":
            yield letter

    async with letters() as channel:
        with trio.fail_after(5):
            async with open_stream(SseResponse(channel), "/") as s:
                assert [e.data async for e in s] == ["a", "b", "c"]


async def test_anyio_stream_streams() -> None:
    import anyio

    send, receive = anyio.create_memory_object_stream[str](10)
    async with send, receive:
        for letter in "xyz":
            send.send_nowait(letter)
        send.close()
        with trio.fail_after(5):
            async with open_stream(SseResponse(receive), "/") as s:
                assert [e.data async for e in s] == ["x", "y", "z"]


async def test_bad_item_in_history_is_skipped_on_replay_too(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from trio_sse import Broadcaster

    bc: Broadcaster[str, Any] = Broadcaster(history=10)
    probe = bc.subscribe("k")
    bc.send("k", "first")
    probe.receive_nowait()
    first = probe.last_id
    probe.close()
    bc.send("k", {"not": "an event"})
    bc.send("k", "after")
    for _ in range(2):  # every reconnect replays past it
        stream = bc.subscribe("k", last_event_id=first)
        with trio.fail_after(5):
            async with open_stream(bc.response(stream), "/") as s:
                assert (await s.__anext__()).data == "after"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2  # once per stream
    assert all(r.exc_info is None for r in warnings)  # no traceback
