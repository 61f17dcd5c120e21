"""Broadcaster basics: keys, subscribing, sending, ids, closing, stats."""

from __future__ import annotations

import gc
from typing import Any

import pytest
import trio
import trio.testing

from trio_sse import (
    Broadcaster,
    BroadcastStream,
    ConfigError,
    Event,
    MemoryBackend,
    SseConfig,
)
from trio_sse._backend import parse_event_id


async def drain(stream: BroadcastStream[str]) -> list[str]:
    """Take every item the stream holds now, without waiting for more."""
    items: list[str] = []
    while True:
        with trio.move_on_after(1):
            items.append(await stream.__anext__())
            continue
        return items


def seq(event_id: str) -> tuple[int, int]:
    parsed = parse_event_id(event_id)
    assert parsed is not None
    return parsed


# -- construction -------------------------------------------------------------


def test_defaults() -> None:
    bc: Broadcaster[str, str] = Broadcaster()
    assert bc.buffer == 128
    assert bc.config == SseConfig()
    assert isinstance(bc.backend, MemoryBackend)
    assert bc.keys() == []


def test_config_is_kept() -> None:
    config = SseConfig(keep_alive=5.0)
    assert Broadcaster(4, config).config is config


@pytest.mark.parametrize("buffer", [0, -1, 1.5, True, "8", float("inf")])
def test_bad_buffer(buffer: object) -> None:
    with pytest.raises(ConfigError, match="buffer"):
        Broadcaster(buffer)  # type: ignore[arg-type]


@pytest.mark.parametrize("history", [-1, 2.0, None])
def test_bad_history(history: object) -> None:
    with pytest.raises(ConfigError, match="history"):
        Broadcaster(history=history)  # type: ignore[arg-type]


def test_bad_config() -> None:
    with pytest.raises(ConfigError, match="SseConfig"):
        Broadcaster(config={"keep_alive": 1})  # type: ignore[arg-type]


def test_history_with_backend_is_an_error() -> None:
    with pytest.raises(ConfigError, match="backend"):
        Broadcaster(history=3, backend=MemoryBackend())


def test_backend_serves_one_broadcaster() -> None:
    backend: MemoryBackend[str, str] = MemoryBackend()
    Broadcaster(backend=backend)
    with pytest.raises(RuntimeError, match="already"):
        Broadcaster(backend=backend)


# -- lazy keys ----------------------------------------------------------------


async def test_send_without_subscriber_creates_nothing() -> None:
    bc: Broadcaster[str, str] = Broadcaster()
    assert bc.send("room", "hello") == 0
    assert bc.keys() == []
    assert bc.subscriber_count("room") == 0
    assert bc.stats().keys == {}


async def test_subscribe_creates_key_and_last_close_removes_it() -> None:
    bc: Broadcaster[str, str] = Broadcaster()
    a = bc.subscribe("room")
    assert bc.keys() == ["room"]
    b = bc.subscribe("room")
    assert bc.subscriber_count("room") == 2
    await a.aclose()
    assert bc.keys() == ["room"]
    assert bc.subscriber_count("room") == 1
    await b.aclose()
    assert bc.keys() == []
    assert bc.subscriber_count("room") == 0


async def test_async_with_unsubscribes() -> None:
    bc: Broadcaster[str, str] = Broadcaster()
    async with bc.subscribe("room") as stream:
        assert bc.subscriber_count("room") == 1
        assert not stream.closed
    assert stream.closed
    assert bc.keys() == []


async def test_close_is_idempotent_and_synchronous() -> None:
    bc: Broadcaster[str, str] = Broadcaster()
    stream = bc.subscribe("room")
    stream.close()  # synchronous
    stream.close()
    assert bc.keys() == []
    await stream.aclose()


async def test_aclose_works_in_a_cancelled_task() -> None:
    bc: Broadcaster[str, str] = Broadcaster()
    stream = bc.subscribe("room")
    with trio.CancelScope() as scope:
        scope.cancel()
        await stream.aclose()
        pytest.fail("aclose() is a checkpoint")  # pragma: no cover
    assert scope.cancelled_caught
    assert stream.closed
    assert bc.subscriber_count("room") == 0


async def test_exit_in_a_cancelled_task_unsubscribes() -> None:
    bc: Broadcaster[str, str] = Broadcaster()
    with trio.CancelScope() as scope:
        async with bc.subscribe("room"):
            scope.cancel()
            await trio.sleep_forever()
    assert bc.keys() == []


async def test_exhaustion_unsubscribes() -> None:
    bc: Broadcaster[str, str] = Broadcaster()
    stream = bc.subscribe("room")
    bc.send("room", "a")
    bc.remove("room")
    assert [item async for item in stream] == ["a"]
    assert stream.closed


async def test_iterating_a_closed_stream_ends() -> None:
    bc: Broadcaster[str, str] = Broadcaster()
    stream = bc.subscribe("room")
    bc.send("room", "a")
    await stream.aclose()
    assert [item async for item in stream] == []


async def test_close_from_another_task_ends_a_waiting_iteration() -> None:
    bc: Broadcaster[str, str] = Broadcaster()
    stream = bc.subscribe("room")
    got: list[str] = []
    async with trio.open_nursery() as nursery:

        async def consume() -> None:
            got.extend([item async for item in stream])

        nursery.start_soon(consume)
        await trio.testing.wait_all_tasks_blocked()
        bc.send("room", "a")
        await trio.testing.wait_all_tasks_blocked()
        await stream.aclose()
    assert got == ["a"]


async def test_finalizer_unsubscribes_with_a_resource_warning() -> None:
    bc: Broadcaster[str, str] = Broadcaster()
    kept = bc.subscribe("room")
    with pytest.warns(ResourceWarning, match="not closed"):
        bc.subscribe("room")  # dropped at once
        gc.collect()
    # The broadcaster closes it at its next operation.
    assert bc.subscriber_count("room") == 1
    assert bc.send("room", "x") == 1
    await kept.aclose()
    assert bc.keys() == []


async def test_finalizer_reaped_by_send() -> None:
    bc: Broadcaster[str, str] = Broadcaster()
    with pytest.warns(ResourceWarning):
        bc.subscribe("room")
        gc.collect()
    assert bc.send("room", "x") == 0
    assert bc.stats().keys == {}


async def test_a_cast_view_keeps_the_subscription_alive() -> None:
    bc: Broadcaster[str, str] = Broadcaster()
    view = bc.subscribe("room").cast_events(Event)
    gc.collect()
    assert bc.subscriber_count("room") == 1
    bc.send("room", "a")
    assert (await view.__anext__()).data == "a"
    await view.aclose()
    assert bc.keys() == []


async def test_ended_stream_is_not_warned_about() -> None:
    bc: Broadcaster[str, str] = Broadcaster()
    stream = bc.subscribe("room")
    bc.remove("room")  # ended by the broadcaster: nothing left registered
    del stream
    gc.collect()


# -- sending --------------------------------------------------------------------


async def test_send_returns_how_many_were_queued(autojump_clock: object) -> None:
    bc: Broadcaster[str, str] = Broadcaster()
    streams = [bc.subscribe("a") for _ in range(3)]
    other = bc.subscribe("b")
    assert bc.send("a", "x") == 3
    assert bc.send("b", "y") == 1
    assert bc.send("c", "z") == 0
    for stream in streams:
        assert await drain(stream) == ["x"]
    assert await drain(other) == ["y"]
    for stream in [*streams, other]:
        await stream.aclose()


async def test_no_item_sent_after_subscribe_is_missed() -> None:
    bc: Broadcaster[str, int] = Broadcaster(buffer=10)
    bc.send("k", 0)
    async with bc.subscribe("k") as stream:
        for i in range(1, 11):
            bc.send("k", i)
        assert [await stream.__anext__() for _ in range(10)] == list(range(1, 11))


async def test_send_never_blocks_on_a_stuck_subscriber() -> None:
    bc: Broadcaster[str, int] = Broadcaster(buffer=2)
    stuck = bc.subscribe("k")  # never read
    got: list[int] = []
    async with trio.open_nursery() as nursery:
        reader = bc.subscribe("k")

        async def consume() -> None:
            async for item in reader:
                got.append(item)

        nursery.start_soon(consume)
        for i in range(100):
            await trio.testing.wait_all_tasks_blocked()
            assert bc.send("k", i) == 2
        await trio.testing.wait_all_tasks_blocked()
        await reader.aclose()
    assert got == list(range(100))
    assert stuck.missed == 98
    await stuck.aclose()


async def test_publish_returns_the_event_id() -> None:
    bc: Broadcaster[str, str] = Broadcaster()
    async with bc.subscribe("k") as stream:
        event_id = await bc.publish("k", "x")
        assert await stream.__anext__() == "x"
        assert stream.last_id == event_id


async def test_publish_is_a_checkpoint() -> None:
    bc: Broadcaster[str, str] = Broadcaster()
    async with bc.subscribe("k") as stream:
        with trio.CancelScope() as scope:
            scope.cancel()
            await bc.publish("k", "lost")
        assert scope.cancelled_caught
        bc.send("k", "kept")
        assert await stream.__anext__() == "kept"


async def test_publish_without_subscriber() -> None:
    bc: Broadcaster[str, str] = Broadcaster()
    first = await bc.publish("k", "x")
    second = await bc.publish("k", "y")
    assert seq(first) < seq(second)
    assert bc.keys() == []


# -- ids ------------------------------------------------------------------------


async def test_ids_are_epoch_dash_seq_and_increase_per_key() -> None:
    bc: Broadcaster[str, str] = Broadcaster()
    async with bc.subscribe("a") as a, bc.subscribe("b") as b:
        ids_a, ids_b = [], []
        for i in range(12):
            bc.send("a" if i % 3 else "b", str(i))
        for _ in range(8):
            await a.__anext__()
            assert a.last_id is not None
            ids_a.append(a.last_id)
        for _ in range(4):
            await b.__anext__()
            assert b.last_id is not None
            ids_b.append(b.last_id)
    for ids in ids_a, ids_b:
        # Each key counts its own items: one epoch, consecutive numbers.
        parsed = [seq(i) for i in ids]
        epoch = parsed[0][0]
        assert epoch >= bc.backend.epoch  # type: ignore[attr-defined]
        assert parsed == [(epoch, n) for n in range(1, len(ids) + 1)]
    # Numeric order, not string order: "...-10" comes after "...-9".
    assert seq(ids_a[-1]) > seq(ids_a[5])


async def test_id_sequence_survives_dropping_a_key() -> None:
    bc: Broadcaster[str, str] = Broadcaster()
    async with bc.subscribe("k") as stream:
        bc.send("k", "x")
        await stream.__anext__()
        first = stream.last_id
    assert bc.keys() == []
    async with bc.subscribe("k") as stream:
        bc.send("k", "y")
        await stream.__anext__()
        assert stream.last_id is not None and first is not None
        assert seq(stream.last_id) > seq(first)


def test_two_broadcasters_never_share_ids() -> None:
    one: Broadcaster[str, str] = Broadcaster()
    two: Broadcaster[str, str] = Broadcaster()
    assert one.backend.epoch != two.backend.epoch  # type: ignore[attr-defined]
    ids_one = {one.backend.publish_nowait("k", "x")[0] for _ in range(5)}
    ids_two = {two.backend.publish_nowait("k", "x")[0] for _ in range(5)}
    assert len(ids_one) == len(ids_two) == 5
    assert not ids_one & ids_two


async def test_event_gets_its_id_once_and_is_shared() -> None:
    bc: Broadcaster[str, Event] = Broadcaster()
    streams = [bc.subscribe("k") for _ in range(3)]
    event = Event("hi")
    bc.send("k", event)
    got = [await s.__anext__() for s in streams]
    assert event.id is None  # the caller's event is not changed
    assert got[0].id == streams[0].last_id
    assert all(g is got[0] for g in got)
    for s in streams:
        await s.aclose()


async def test_event_with_its_own_id_is_kept() -> None:
    bc: Broadcaster[str, Event] = Broadcaster()
    async with bc.subscribe("k") as stream:
        event = Event("hi", id="mine")
        bc.send("k", event)
        assert await stream.__anext__() is event
        assert stream.last_id is not None and stream.last_id != "mine"


# -- remove ---------------------------------------------------------------------


async def test_remove_ends_every_subscriber_after_what_they_hold() -> None:
    bc: Broadcaster[str, str] = Broadcaster()
    a, b = bc.subscribe("k"), bc.subscribe("k")
    other = bc.subscribe("other")
    bc.send("k", "x")
    assert bc.remove("k") == 2
    assert bc.keys() == ["other"]
    assert bc.send("k", "lost") == 0
    assert [i async for i in a] == ["x"]
    assert [i async for i in b] == ["x"]
    assert bc.remove("k") == 0
    await other.aclose()


async def test_remove_wakes_a_waiting_subscriber() -> None:
    bc: Broadcaster[str, str] = Broadcaster()
    stream = bc.subscribe("k")
    got: list[str] = ["unset"]
    async with trio.open_nursery() as nursery:

        async def consume() -> None:
            got[:] = [i async for i in stream]

        nursery.start_soon(consume)
        await trio.testing.wait_all_tasks_blocked()
        bc.remove("k")
    assert got == []


# -- stats ----------------------------------------------------------------------


async def test_stats() -> None:
    bc: Broadcaster[str, str] = Broadcaster(buffer=1)
    a = bc.subscribe("a").on_lag(None)
    a2 = bc.subscribe("a")
    b = bc.subscribe("b")
    bc.send("a", "1")
    bc.send("a", "2")  # both subscribers of "a" lag
    bc.send("a", "3")  # still the same lag episode
    bc.send("b", "1")
    bc.send("nobody", "x")
    stats = bc.stats()
    assert stats.subscribers == 3
    assert stats.published == 5
    assert stats.sent == 4
    assert stats.lagged == 2
    assert stats.missed == 4
    assert stats.keys["a"].subscribers == 2
    assert stats.keys["a"].sent == 3
    assert stats.keys["a"].lagged == 2
    assert stats.keys["a"].missed == 4
    assert stats.keys["b"].sent == 1 and stats.keys["b"].missed == 0
    with pytest.raises(AttributeError):
        stats.sent = 0  # type: ignore[misc]
    with pytest.raises(TypeError):
        stats.keys["a"] = stats.keys["b"]  # type: ignore[index]
    for s in a, a2, b:
        await s.aclose()
    stats = bc.stats()
    assert stats.keys == {} and stats.subscribers == 0
    assert (stats.sent, stats.lagged, stats.missed) == (4, 2, 4)


def test_repr_mentions_the_key() -> None:
    bc: Broadcaster[str, str] = Broadcaster()
    stream = bc.subscribe("room")
    assert "'room'" in repr(stream) and "open" in repr(stream)
    stream.close()
    assert "closed" in repr(stream)


# --- max_event_bytes ------------------------------------------------------------------


def test_events_over_max_event_bytes_are_refused_at_publish() -> None:
    from trio_sse import InvalidEvent, SseConfig

    bc: Broadcaster[str, Any] = Broadcaster(
        config=SseConfig(max_event_bytes=1000), history=10
    )
    stream = bc.subscribe("k")
    small = Event("x" * 900)
    assert bc.send("k", small) == 1
    # Newlines cost "data: " each on the wire: 200 lines of 1 char are over.
    for item in (Event("y\n" * 200), Event("z" * 2000), "w" * 2000, b"q" * 2000):
        with pytest.raises(InvalidEvent, match="max_event_bytes"):
            bc.send("k", item)
    with pytest.raises(InvalidEvent, match="10,000,000"):
        bc.send("k", Event("\n" * 10_000_000))  # refused before encoding
    try:
        assert [e.data for e in stream.receive_batch_nowait(10)] == [small.data]
        with pytest.raises(trio.WouldBlock):
            stream.receive_nowait()
        epoch = (stream.last_id or "").split("-")[0]
    finally:
        stream.close()
    # Nothing refused was kept for a replay either.
    late = bc.subscribe("k", last_event_id=f"{epoch}-0")
    try:
        assert [e.data for e in late.receive_batch_nowait(10)] == [small.data]
    finally:
        late.close()


async def test_max_event_bytes_applies_to_publish_and_can_be_off() -> None:
    from trio_sse import InvalidEvent, SseConfig

    bc: Broadcaster[str, Any] = Broadcaster(config=SseConfig(max_event_bytes=100))
    with pytest.raises(InvalidEvent):
        await bc.publish("k", Event("x" * 200))
    assert SseConfig().max_event_bytes == 1_048_576
    free: Broadcaster[str, Any] = Broadcaster(config=SseConfig(max_event_bytes=None))
    assert free.send("k", Event("x" * 2_000_000)) == 0
