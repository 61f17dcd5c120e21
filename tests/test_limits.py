"""SseConfig.max_streams: a per-process cap on open streams, counted by serve()."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from trio_sse import Broadcaster, Event, EventParser, SseConfig, SseResponse
from trio_sse._limits import STREAMS_SCOPE_KEY, StreamCount


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
