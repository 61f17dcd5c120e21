"""SseConfig.max_streams: a per-process cap on open streams, counted by serve()."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from trio_sse import (
    Broadcaster,
    Event,
    EventParser,
    LagPolicy,
    MemoryBackend,
    Replay,
    SseConfig,
    SseResponse,
)
from trio_sse._limits import REFUSAL_LOG_INTERVAL, STREAMS_SCOPE_KEY, StreamCount


async def call(response: Any, scope: dict[str, Any]) -> tuple[list[Any], bool]:
    """Run a response that must answer at once; return its messages."""
    sent: list[Any] = []

    async def receive() -> Any:
        await trio.sleep_forever()

    async def send(message: Any) -> None:
        sent.append(message)

    with trio.fail_after(5):
        await response(scope, receive, send)
    return sent, sent[-1].get("more_body", False) is False


def scope_with(count: StreamCount) -> dict[str, Any]:
    return {"type": "http", "method": "GET", "headers": [], STREAMS_SCOPE_KEY: count}


async def test_over_the_cap_answers_200_with_retry_and_ends() -> None:
    config = SseConfig(max_streams=2, overload_retry=5)
    bc: Broadcaster[str, Event] = Broadcaster(config=config)
    count = StreamCount()
    count.open = 2
    stream = bc.subscribe("k")
    sent, ended = await call(bc.response(stream), scope_with(count))
    assert ended and sent[0]["status"] == 200
    assert (b"content-type", b"text/event-stream; charset=utf-8") in sent[0]["headers"]
    EventParser().feed(sent[1]["body"])
    retry = int(sent[1]["body"].split(b"retry: ")[1].split(b"\n")[0])
    assert 4000 <= retry <= 6000  # 5 s, ± 20 % jitter
    # The stream never started: its subscription is gone at once.
    assert stream.closed and bc.subscriber_count("k") == 0
    assert count.open == 2


async def test_over_the_cap_answers_503_with_retry_after_when_asked() -> None:
    config = SseConfig(max_streams=1, overload_status=503, overload_retry=10)
    count = StreamCount()
    count.open = 1
    sent, ended = await call(SseResponse(None, config=config), scope_with(count))
    assert ended and sent[0]["status"] == 503
    retry_after = dict(sent[0]["headers"])[b"retry-after"]
    assert 8 <= int(retry_after) <= 12


async def test_streams_are_counted_while_open(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = SseConfig(max_streams=5, keep_alive=None)
    count = StreamCount()
    tx, rx = trio.open_memory_channel[Any](1)
    disconnect = trio.Event()

    async def receive() -> Any:
        await disconnect.wait()
        return {"type": "http.disconnect"}

    async def send(message: Any) -> None:
        await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            SseResponse(rx, config=config), scope_with(count), receive, send
        )
        await trio.testing.wait_all_tasks_blocked()
        assert count.open == 1
        disconnect.set()
    assert count.open == 0
    tx.close()


@pytest.mark.parametrize("bad", [0, -1, 2.5, True])
def test_bad_limits_are_config_errors(bad: object) -> None:
    from trio_sse import ConfigError

    with pytest.raises(ConfigError) as info:
        SseConfig(max_streams=bad)  # type: ignore[arg-type]
    assert info.value.key == "max_streams"
    with pytest.raises(ConfigError) as info:
        SseConfig(overload_status=404)
    assert info.value.key == "overload_status"


async def test_a_real_server_caps_its_streams(open_server: Any, open_http: Any) -> None:
    config = SseConfig(max_streams=2, overload_retry=1, keep_alive=None)
    bc: Broadcaster[str, Event] = Broadcaster(config=config)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            await bc.response(bc.subscribe("k"))(scope, receive, send)

    async with open_server(app, config=config) as url:
        async with open_http(url, "/") as first, open_http(url, "/") as second:
            assert await first.receive_response() == 200
            assert await second.receive_response() == 200
            with trio.fail_after(10):
                while bc.subscriber_count("k") < 2:  # noqa: ASYNC110
                    await trio.sleep(0.01)
            async with open_http(url, "/") as third:
                assert await third.receive_response() == 200
                with trio.fail_after(10):
                    await third.read_to_end()
                assert b"retry: " in bytes(third.body)
            assert bc.subscriber_count("k") == 2
        # Both left: room again.
        with trio.fail_after(10):
            while bc.subscriber_count("k"):  # noqa: ASYNC110
                await trio.sleep(0.01)
        async with open_http(url, "/") as fourth:
            assert await fourth.receive_response() == 200
            bc.send("k", Event("welcome"))
            with trio.fail_after(10):
                await fourth.read_until(b"welcome")


class SpyBackend(MemoryBackend[str, Event]):
    """The memory backend, recording the keys it is told are subscribed."""

    def __init__(self, history: int = 0) -> None:
        super().__init__(history)
        self.calls: list[tuple[str, str]] = []

    def subscribed(self, key: str) -> None:
        self.calls.append(("subscribed", key))
        super().subscribed(key)

    def unsubscribed(self, key: str) -> None:
        self.calls.append(("unsubscribed", key))
        super().unsubscribed(key)

    def replay_nowait(self, key: str, last_event_id: str | None) -> Replay[Event]:
        self.calls.append(("replay", key))
        return super().replay_nowait(key, last_event_id)


@pytest.mark.parametrize("method", ["GET", "HEAD"])
async def test_subscribe_response_never_subscribes_when_refused(method: str) -> None:
    config = SseConfig(max_streams=1)
    backend = SpyBackend(history=10)
    bc: Broadcaster[str, Event] = Broadcaster(config=config, backend=backend)
    bc.send("k", Event("retained"))
    count = StreamCount()
    count.open = 1
    scope = scope_with(count)
    scope["method"] = method
    scope["headers"] = [(b"last-event-id", b"0-0")]

    # The eager form subscribes while the application builds the response,
    # then closes the subscription for the refusal.
    await call(bc.response(bc.subscribe("k", last_event_id="0-0")), scope)
    assert backend.calls == [
        ("subscribed", "k"),
        ("replay", "k"),
        ("unsubscribed", "k"),
    ]
    backend.calls.clear()

    sent, ended = await call(bc.subscribe_response("k"), scope)
    assert ended and sent[0]["status"] == 200
    if method == "GET":
        assert b"retry: " in sent[1]["body"]
    assert backend.calls == []
    assert bc.statistics().subscribers == 0 and bc.keys() == []
    assert count.open == 1


async def test_subscribe_response_subscribes_once_admitted(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = SseConfig(max_streams=1, keep_alive=None)
    backend = SpyBackend(history=10)
    bc: Broadcaster[str, int] = Broadcaster(config=config, backend=backend)  # type: ignore[arg-type]
    for n in range(3):
        bc.send("k", n)
    first_id = f"{backend.epoch}-1"
    response = bc.subscribe_response(
        "k", on_lag=LagPolicy.SKIP, cast_events=lambda n: Event(str(n * 10))
    )
    assert backend.calls == [] and bc.keys() == []

    count = StreamCount()
    disconnect = trio.Event()
    bodies: list[bytes] = []

    async def receive() -> Any:
        await disconnect.wait()
        return {"type": "http.disconnect"}

    async def send(message: Any) -> None:
        bodies.append(message.get("body", b""))

    scope = scope_with(count)
    # The request's Last-Event-ID: the first item is replayed past.
    scope["headers"] = [(b"last-event-id", first_id.encode())]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(response, scope, receive, send)
        await trio.testing.wait_all_tasks_blocked()
        assert backend.calls == [("subscribed", "k"), ("replay", "k")]
        assert count.open == 1 and bc.subscriber_count("k") == 1
        bc.send("k", 3)
        await trio.testing.wait_all_tasks_blocked()
        events = EventParser().feed(b"".join(bodies))
        assert [e.data for e in events] == ["10", "20", "30"]
        assert events[-1].last_event_id == f"{backend.epoch}-4"
        disconnect.set()
    assert count.open == 0 and bc.keys() == []


def test_subscribe_response_checks_its_arguments() -> None:
    bc: Broadcaster[Any, Event] = Broadcaster()
    with pytest.raises(TypeError):
        bc.subscribe_response(["unhashable"])
    with pytest.raises(TypeError, match="on_lag"):
        bc.subscribe_response("k", on_lag="skip")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="cast_events"):
        bc.subscribe_response("k", cast_events=42)  # type: ignore[arg-type]
    assert bc.keys() == []


async def test_a_real_server_refuses_before_subscribing(
    open_server: Any, open_http: Any
) -> None:
    config = SseConfig(max_streams=1, overload_retry=1, keep_alive=None)
    backend = SpyBackend()
    bc: Broadcaster[str, Event] = Broadcaster(config=config, backend=backend)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            key = scope["path"].strip("/")
            await bc.subscribe_response(key)(scope, receive, send)

    async with open_server(app, config=config) as url, open_http(url, "/a") as first:
        assert await first.receive_response() == 200
        with trio.fail_after(10):
            while bc.subscriber_count("a") < 1:  # noqa: ASYNC110
                await trio.sleep(0.01)
        async with open_http(url, "/b") as refused:
            with trio.fail_after(10):
                await refused.read_to_end()
                assert refused.status == 200 and b"retry: " in bytes(refused.body)
                # The server closes the connection with the answer.
                assert refused.headers["connection"] == "close"
                await refused.receive_some()
                assert refused.eof
        assert backend.calls == [("subscribed", "a")]
        bc.send("a", Event("still here"))
        with trio.fail_after(10):
            await first.read_until(b"still here")


@pytest.mark.parametrize(("version", "close"), [("1.1", True), ("2", False)])
async def test_a_refusal_closes_an_http1_connection(version: str, close: bool) -> None:
    count = StreamCount()
    count.open = 1
    scope = scope_with(count)
    scope["http_version"] = version
    sent, _ = await call(SseResponse(None, config=SseConfig(max_streams=1)), scope)
    connection = [v for n, v in sent[0]["headers"] if n == b"connection"]
    # The connection (and its file descriptor) is freed with the answer.
    assert connection == ([b"close"] if close else [])


async def test_refusals_are_logged_a_few_lines_per_flood(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    config = SseConfig(max_streams=1)
    count = StreamCount()
    assert count.acquire(1)

    async def refuse(times: int) -> None:
        for _ in range(times):
            await call(SseResponse(None, config=config), scope_with(count))

    def lines() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.name == "trio_sse"]

    await refuse(100)
    assert lines() == ["1 stream refused: 1 streams open (max_streams)"]
    await trio.sleep(REFUSAL_LOG_INTERVAL)
    await refuse(1)
    assert lines()[1:] == ["100 streams refused: 1 streams open (max_streams)"]
    # What is left is logged by the next stream that ends once it is due...
    await refuse(5)
    count.release()
    assert len(lines()) == 2
    await trio.sleep(REFUSAL_LOG_INTERVAL)
    assert count.acquire(1)
    assert lines()[2:] == ["5 streams refused: 1 streams open (max_streams)"]
    # ... or by serve() when it stops.
    await refuse(3)
    count.log_refusals()
    assert lines()[3:] == ["3 streams refused: 1 streams open (max_streams)"]
    assert count.refused == 109 and count.open == 1


async def test_a_websocket_over_the_cap_is_closed_with_1013(
    caplog: pytest.LogCaptureFixture,
) -> None:
    count = StreamCount()
    count.open = 1
    scope = {"type": "websocket", "headers": [], STREAMS_SCOPE_KEY: count}
    sent: list[Any] = []

    async def receive() -> Any:
        return {"type": "websocket.connect"}

    async def send(message: Any) -> None:
        sent.append(message)

    bc: Broadcaster[str, Event] = Broadcaster(config=SseConfig(max_streams=1))
    with trio.fail_after(5):
        await bc.websocket(bc.subscribe("k"))(scope, receive, send)
    assert [m["type"] for m in sent] == ["websocket.close"]
    assert sent[0]["code"] == 1013
    assert bc.keys() == [] and count.refused == 1
    assert "1 stream refused: 1 streams open (max_streams)" in caplog.text
