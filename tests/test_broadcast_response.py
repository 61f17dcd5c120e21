"""Broadcaster.response() and Broadcaster.channel(): streams served over ASGI."""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import Any

import pytest
import trio
import trio.testing

import trio_sse._event
from trio_sse import (
    Broadcaster,
    BroadcastStream,
    ConfigError,
    Event,
    Lagged,
    Sender,
    SseConfig,
    SseResponse,
    chain,
    last_event_id,
    replay,
)
from trio_sse._streams import as_event
from trio_sse.testing import open_stream

CONFIG = SseConfig(keep_alive=None)


def room_app(bc: Broadcaster[str, Any]) -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        stream = bc.subscribe("room", last_event_id=last_event_id(scope))
        await bc.response(stream)(scope, receive, send)

    return app


def test_response_uses_the_broadcasters_config() -> None:
    bc: Broadcaster[str, str] = Broadcaster(config=CONFIG)
    stream = bc.subscribe("k")
    response = bc.response(stream)
    assert isinstance(response, SseResponse)
    assert response.config is CONFIG
    stream.close()


async def test_response_lifetime_ends_the_stream_and_frees_the_subscriber(
    autojump_clock: trio.testing.MockClock,
) -> None:
    bc: Broadcaster[str, str] = Broadcaster(config=SseConfig(keep_alive=None))
    stream = bc.subscribe("k")
    response = bc.response(stream, lifetime=60)
    assert response.lifetime == 60
    async with open_stream(response, "/") as client:
        bc.send("k", "before")
        assert (await client.__anext__()).data == "before"
        start = trio.current_time()
        assert [m.data async for m in client] == []
        # Ended by the lifetime, less up to 10 % (never after it).
        assert 54 <= trio.current_time() - start <= 60
    assert bc.subscriber_count("k") == 0
    async with bc.subscribe("k") as other:
        with pytest.raises(ConfigError, match="max_lifetime"):
            bc.response(other, lifetime=0)


def test_channel_uses_the_broadcasters_config() -> None:
    bc: Broadcaster[str, str] = Broadcaster(config=CONFIG)

    async def fn(tx: Sender) -> None:
        await tx.send("x")  # pragma: no cover

    response = bc.channel(fn)
    assert isinstance(response, SseResponse)
    assert response.config is CONFIG


async def test_events_and_strings_are_served_with_ids(
    autojump_clock: trio.testing.MockClock,
) -> None:
    bc: Broadcaster[str, Any] = Broadcaster(config=CONFIG)
    async with open_stream(room_app(bc), "/") as client:
        assert client.status == 200
        await trio.testing.wait_all_tasks_blocked()
        assert bc.subscriber_count("room") == 1
        first = await bc.publish("room", "plain text")
        second = await bc.publish("room", Event.json({"n": 1}, event="tick"))
        got = [await client.__anext__() for _ in range(2)]
    assert [(m.type, m.data, m.last_event_id) for m in got] == [
        ("message", "plain text", first),
        ("tick", '{"n":1}', second),
    ]
    await trio.testing.wait_all_tasks_blocked()
    assert bc.keys() == []  # the response closed the stream


async def test_reconnect_with_last_event_id_is_replayed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    bc: Broadcaster[str, str] = Broadcaster(config=CONFIG, history=10)
    ids = [await bc.publish("room", f"m{i}") for i in range(4)]
    headers = {"last-event-id": ids[1]}
    async with open_stream(room_app(bc), "/", headers=headers) as client:
        got = [await client.__anext__() for _ in range(2)]
    assert [(m.data, m.last_event_id) for m in got] == [("m2", ids[2]), ("m3", ids[3])]


async def test_cast_events_stream_is_served(
    autojump_clock: trio.testing.MockClock,
) -> None:
    bc: Broadcaster[str, int] = Broadcaster(config=CONFIG)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        stream = bc.subscribe("n").cast_events(lambda n: Event(str(n * n)))
        await bc.response(stream)(scope, receive, send)

    async with open_stream(app, "/") as client:
        await trio.testing.wait_all_tasks_blocked()
        event_id = await bc.publish("n", 7)
        message = await client.__anext__()
    assert (message.data, message.last_event_id) == ("49", event_id)


async def test_snapshot_chained_before_live_items(
    autojump_clock: trio.testing.MockClock,
) -> None:
    bc: Broadcaster[str, str] = Broadcaster(config=CONFIG)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        live = bc.subscribe("room")
        await bc.response(chain(replay(["snapshot"]), live))(scope, receive, send)

    async with open_stream(app, "/") as client:
        assert (await client.__anext__()).data == "snapshot"
        event_id = await bc.publish("room", "live")
        message = await client.__anext__()
    assert (message.data, message.last_event_id) == ("live", event_id)
    await trio.testing.wait_all_tasks_blocked()
    assert bc.keys() == []


async def test_channel_runs_the_function(
    autojump_clock: trio.testing.MockClock,
) -> None:
    bc: Broadcaster[str, str] = Broadcaster(config=CONFIG)

    async def fn(tx: Sender) -> None:
        async with bc.subscribe("room") as stream:
            async for item in stream:
                await tx.send(Event(item.upper(), id=stream.last_id))

    async with open_stream(bc.channel(fn), "/") as client:
        await trio.testing.wait_all_tasks_blocked()
        event_id = await bc.publish("room", "hi")
        message = await client.__anext__()
    assert (message.data, message.last_event_id) == ("HI", event_id)
    await trio.testing.wait_all_tasks_blocked()
    assert bc.keys() == []


async def test_many_clients_share_one_encoding(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    encoded: list[Event] = []
    original = trio_sse._event._encode

    def counting(event: Event) -> bytes:
        encoded.append(event)
        return original(event)

    monkeypatch.setattr(trio_sse._event, "_encode", counting)
    bc: Broadcaster[str, Event] = Broadcaster(config=CONFIG)
    async with AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(open_stream(room_app(bc), "/"))
            for _ in range(20)
        ]
        await trio.testing.wait_all_tasks_blocked()
        assert bc.subscriber_count("room") == 20
        event_id = await bc.publish("room", Event("to all", event="note"))
        got = [await client.__anext__() for client in clients]
    assert {(m.type, m.data, m.last_event_id) for m in got} == {
        ("note", "to all", event_id)
    }
    assert len(encoded) == 1


# -- what response() streams, read directly ----------------------------------


def events_of(bc: Broadcaster[str, Any], stream: Any) -> Any:
    return bc.response(stream).stream


async def test_other_items_are_a_type_error_naming_cast_events() -> None:
    bc: Broadcaster[str, Any] = Broadcaster()
    stream = bc.subscribe("k")
    events = events_of(bc, stream)
    bc.send("k", {"not": "an event"})
    with pytest.raises(TypeError, match=r"dict.*cast_events"):
        await events.__anext__()
    with pytest.raises(TypeError, match="cast_events"):
        await events_of(bc, replay([b"raw"])).__anext__()
    await events.aclose()
    assert stream.closed


async def test_a_lag_ends_the_response() -> None:
    # Without a lag policy the stream raises Lagged; the response ends on it
    # (as LagPolicy.END does), so the client reconnects with Last-Event-ID.
    bc: Broadcaster[str, str] = Broadcaster(1, config=SseConfig(keep_alive=None))
    stream = bc.subscribe("k")
    bc.send("k", "a")
    bc.send("k", "b")
    with trio.fail_after(5):
        async with open_stream(bc.response(stream), "/") as events:
            assert [e.data async for e in events] == []
            assert events.complete
    assert stream.closed


async def test_a_lag_ends_a_response_after_what_it_wrote() -> None:
    bc: Broadcaster[str, str] = Broadcaster(1, config=SseConfig(keep_alive=None))
    stream = bc.subscribe("k")
    async with open_stream(bc.response(stream), "/") as events:
        bc.send("k", "a")
        assert (await events.__anext__()).data == "a"
        await trio.testing.wait_all_tasks_blocked()
        stream.close()  # stands in for the lag's end, as seen by the writer
        with trio.fail_after(5):
            assert [e.data async for e in events] == []
    view = bc.subscribe("k").cast_events(as_event)
    bc.send("k", "x")
    bc.send("k", "y")
    with pytest.raises(Lagged):
        view.receive_nowait()
    view.close()


async def test_channel_style_reading_converts_and_fills_ids() -> None:
    bc: Broadcaster[str, str] = Broadcaster()
    stream: BroadcastStream[str] = bc.subscribe("k")
    events = events_of(bc, stream)
    bc.send("k", "a")
    bc.send("k", "b")
    first = events.receive_nowait()
    second = await events.receive()
    assert (first.data, second.data) == ("a", "b")
    assert second.id == stream.last_id
    await events.aclose()


# --- the reset event, when a Last-Event-ID cannot be replayed ------------------------


async def test_replay_reset_event_when_the_id_was_trimmed() -> None:
    config = SseConfig(keep_alive=None, replay_reset_event="reset")
    bc: Broadcaster[str, str] = Broadcaster(config=config, history=2)
    probe = bc.subscribe("k")
    for item in ("a", "b", "c", "d"):
        bc.send("k", item)
    first = probe.receive_nowait()
    assert first == "a"
    trimmed, kept = probe.last_id, None
    probe.receive_nowait()
    probe.receive_nowait()
    kept = probe.last_id  # "c" is still retained, and "d" after it
    probe.close()
    cases = [(trimmed, ["reset"]), (kept, ["message"]), ("nonsense", ["reset"])]
    for last_id, expected in cases:
        stream = bc.subscribe("k", last_event_id=last_id)
        bc.send("k", "live")
        with trio.fail_after(5):
            async with open_stream(bc.response(stream), "/") as events:
                got = await events.__anext__()
                assert [got.type] == expected
                if got.type == "reset":
                    assert got.data == ""
                    assert (await events.__anext__()).data == "live"
                else:
                    assert got.data == "d"


async def test_no_reset_event_unless_configured_or_without_an_id() -> None:
    for config, last_id in [
        (SseConfig(keep_alive=None), "nonsense"),
        (SseConfig(keep_alive=None, replay_reset_event="reset"), None),
    ]:
        bc: Broadcaster[str, str] = Broadcaster(config=config, history=2)
        stream = bc.subscribe("k", last_event_id=last_id)
        bc.send("k", "live")
        with trio.fail_after(5):
            async with open_stream(bc.response(stream), "/") as events:
                got = await events.__anext__()
        assert (got.type, got.data) == ("message", "live")


def test_replay_reset_event_must_be_a_name() -> None:
    from trio_sse import ConfigError

    for bad in ("", "a\nb", 3):
        with pytest.raises(ConfigError) as info:
            SseConfig(replay_reset_event=bad)  # type: ignore[arg-type]
        assert info.value.key == "replay_reset_event"
    assert SseConfig.from_mapping({"replay_reset_event": "x"}).replay_reset_event == "x"
