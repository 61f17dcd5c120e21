"""replay(), chain(), cast_events(), channel-style receive, and encode-once."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest
import trio
import trio.testing

import trio_sse
import trio_sse._event
from trio_sse import (
    Broadcaster,
    BroadcastStream,
    Event,
    Lagged,
    LagPolicy,
    cast_events,
    chain,
    replay,
)

# -- replay() ----------------------------------------------------------------


async def test_replay_yields_a_copy_of_the_items() -> None:
    items = [1, 2, 3]
    stream = replay(items)
    items.append(4)
    assert [i async for i in stream] == [1, 2, 3]
    assert items == [1, 2, 3, 4]  # the caller's list is not consumed


async def test_replay_is_a_checkpoint_per_item() -> None:
    stream = replay([1])
    with trio.CancelScope() as scope:
        scope.cancel()
        await stream.__anext__()
    assert scope.cancelled_caught
    assert await stream.__anext__() == 1


async def test_replay_closes() -> None:
    async with replay([1, 2]) as stream:  # type: ignore[attr-defined]
        assert await stream.__anext__() == 1
    assert [i async for i in stream] == []


# -- chain() ----------------------------------------------------------------


async def test_chain_yields_each_in_turn() -> None:
    async def gen() -> AsyncIterator[int]:
        yield 3
        yield 4

    assert [i async for i in chain(replay([1, 2]), gen(), replay([]))] == [1, 2, 3, 4]
    assert [i async for i in chain()] == []


async def test_chain_snapshot_then_live_and_aclose_unsubscribes() -> None:
    bc: Broadcaster[str, str] = Broadcaster()
    live = bc.subscribe("k")
    stream = chain(replay(["snapshot"]), live)
    bc.send("k", "live")
    assert await stream.__anext__() == "snapshot"
    assert stream.last_id is None  # type: ignore[attr-defined]
    assert await stream.__anext__() == "live"
    assert stream.last_id == live.last_id  # type: ignore[attr-defined]
    await stream.aclose()  # type: ignore[attr-defined]
    assert live.closed and bc.keys() == []


async def test_chain_aclose_closes_parts_not_yet_reached() -> None:
    bc: Broadcaster[str, str] = Broadcaster()
    later = bc.subscribe("k")
    async with chain(replay(["a"]), later) as stream:  # type: ignore[attr-defined]
        assert await stream.__anext__() == "a"
    assert later.closed and bc.keys() == []


async def test_chain_closes_a_finished_part() -> None:
    bc: Broadcaster[str, str] = Broadcaster()
    first = bc.subscribe("a")
    bc.send("a", "x")
    bc.remove("a")
    second = bc.subscribe("b")
    stream = chain(first, second)
    bc.send("b", "y")
    assert [await stream.__anext__() for _ in range(2)] == ["x", "y"]
    assert first.closed and not second.closed
    await stream.aclose()  # type: ignore[attr-defined]
    assert second.closed


# -- cast_events() ----------------------------------------------------------------


async def test_cast_events_of_a_stream_is_a_view_with_ids() -> None:
    bc: Broadcaster[str, int] = Broadcaster()
    stream = bc.subscribe("k")
    events = cast_events(stream, lambda i: Event(str(i), event="n"))
    assert isinstance(events, BroadcastStream)
    bc.send("k", 1)
    event = await events.__anext__()
    assert (event.data, event.event, event.id) == ("1", "n", stream.last_id)
    assert events.last_id == stream.last_id
    await events.aclose()
    assert stream.closed and bc.keys() == []


async def test_cast_events_keeps_an_events_own_id() -> None:
    bc: Broadcaster[str, int] = Broadcaster()
    async with bc.subscribe("k").cast_events(lambda i: Event("x", id="own")) as events:
        bc.send("k", 1)
        assert (await events.__anext__()).id == "own"


async def test_cast_events_of_a_cast_view() -> None:
    bc: Broadcaster[str, int] = Broadcaster()
    events = (
        bc.subscribe("k")
        .cast_events(lambda i: Event(str(i)))
        .cast_events(lambda e: e.with_event("twice"))
    )
    async with events:
        bc.send("k", 5)
        got = await events.__anext__()
        assert (got.data, got.event, got.id) == ("5", "twice", events.last_id)


async def test_cast_events_requires_an_event() -> None:
    bc: Broadcaster[str, int] = Broadcaster()
    async with bc.subscribe("k").cast_events(str) as events:  # type: ignore[arg-type]
        bc.send("k", 1)
        with pytest.raises(TypeError, match="must return an Event"):
            await events.__anext__()


async def test_cast_events_of_any_async_iterable() -> None:
    closed = []

    async def gen() -> AsyncIterator[int]:
        try:
            yield 1
            yield 2
        finally:
            closed.append(True)

    events = cast_events(gen(), lambda i: Event(str(i)))
    first = await events.__anext__()
    assert (first.data, first.id) == ("1", None)  # no ids to fill
    await events.aclose()  # type: ignore[attr-defined]
    assert closed == [True]

    with pytest.raises(TypeError, match="must return an Event"):
        await cast_events(replay([1]), str).__anext__()  # type: ignore[arg-type]


async def test_cast_events_fills_ids_from_a_chain() -> None:
    bc: Broadcaster[str, int] = Broadcaster()
    live = bc.subscribe("k")
    events = cast_events(chain(replay([0]), live), lambda i: Event(str(i)))
    bc.send("k", 1)
    assert (await events.__anext__()).id is None
    assert (await events.__anext__()).id == live.last_id
    await events.aclose()  # type: ignore[attr-defined]
    assert live.closed


# -- channel-style receive ------------------------------------------------------------


async def test_receive_nowait_and_receive() -> None:
    bc: Broadcaster[str, int] = Broadcaster(2)
    stream = bc.subscribe("k")
    with pytest.raises(trio.WouldBlock):
        stream.receive_nowait()
    bc.send("k", 1)
    bc.send("k", 2)
    bc.send("k", 3)
    with pytest.raises(Lagged):
        stream.receive_nowait()
    assert stream.receive_nowait() == 2
    assert await stream.receive() == 3
    bc.remove("k")
    with pytest.raises(trio.EndOfChannel):
        await stream.receive()
    with pytest.raises(trio.EndOfChannel):
        stream.receive_nowait()
    assert stream.closed


async def test_receive_of_a_closed_stream_ends() -> None:
    bc: Broadcaster[str, int] = Broadcaster()
    stream = bc.subscribe("k").cast_events(lambda i: Event(str(i)))
    await stream.aclose()
    with pytest.raises(trio.EndOfChannel):
        stream.receive_nowait()
    with pytest.raises(trio.EndOfChannel):
        await stream.receive()


async def test_receive_is_a_checkpoint_even_with_items_ready() -> None:
    bc: Broadcaster[str, int] = Broadcaster()
    async with bc.subscribe("k") as stream:
        bc.send("k", 1)
        with trio.CancelScope() as scope:
            scope.cancel()
            await stream.receive()
        assert scope.cancelled_caught
        assert stream.receive_nowait() == 1  # nothing was lost


# -- encode once ----------------------------------------------------------------


async def test_a_broadcast_to_many_subscribers_encodes_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[Event] = []
    original = trio_sse._event._encode

    def counting(event: Event) -> bytes:
        calls.append(event)
        return original(event)

    monkeypatch.setattr(trio_sse._event, "_encode", counting)
    bc: Broadcaster[str, Event] = Broadcaster(history=4)
    streams = [bc.subscribe("k") for _ in range(100)]
    bc.send("k", Event("hello"))
    wire = {(await s.__anext__()).encode() for s in streams}
    assert len(calls) == 1
    assert wire == {f"id: {streams[0].last_id}\ndata: hello\n\n".encode()}
    # A reconnecting client is replayed the same, already encoded event.
    start = f"{(streams[0].last_id or '').split('-')[0]}-0"
    async with bc.subscribe("k", last_event_id=start) as again:
        assert (await again.__anext__()).encode() in wire
    assert len(calls) == 1
    for s in streams:
        await s.aclose()


async def test_skip_policy_view_in_a_loop() -> None:
    bc: Broadcaster[str, int] = Broadcaster(1)
    got: list[int] = []
    async with trio.open_nursery() as nursery:
        stream = bc.subscribe("k").on_lag(LagPolicy.SKIP)

        async def consume() -> None:
            async with stream:
                async for item in stream:
                    got.append(item)

        nursery.start_soon(consume)
        await trio.testing.wait_all_tasks_blocked()
        for i in range(5):
            bc.send("k", i)  # 0 is handed over, 1..3 are skipped, 4 is held
        await trio.testing.wait_all_tasks_blocked()
        bc.remove("k")
    assert got == [0, 4]
    assert stream.missed == 3


# -- cast_events(): once per item of a key, shared by the subscribers -----------


async def test_cast_events_runs_once_per_item_for_all_subscribers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    encoded: list[Event] = []
    original = trio_sse._event._encode

    def counting(event: Event) -> bytes:
        encoded.append(event)
        return original(event)

    monkeypatch.setattr(trio_sse._event, "_encode", counting)
    calls: list[str] = []

    def fn(text: str) -> Event:
        calls.append(text)
        return Event(text.upper())

    bc: Broadcaster[str, str] = Broadcaster(history=10)
    views = [bc.subscribe("k").cast_events(fn) for _ in range(50)]
    bc.send("k", "a")
    bc.send("k", "b")
    # Both ways a view is read: one at a time, and in a batch.
    firsts = [await v.receive() for v in views]
    seconds = [v.receive_batch_nowait(10)[0] for v in views]
    assert calls == ["a", "b"]
    assert {id(e) for e in firsts} == {id(firsts[0])}
    assert {e.encode() for e in firsts} == {f"id: {firsts[0].id}\ndata: A\n\n".encode()}
    assert {e.encode() for e in seconds} == {
        f"id: {views[0].last_id}\ndata: B\n\n".encode()
    }
    assert len(encoded) == 2
    # A replay of the same ids reuses them too.
    async with bc.subscribe(
        "k",
        last_event_id=f"{bc.backend.epoch}-0",  # type: ignore[attr-defined]
    ).cast_events(fn) as again:
        assert [(await again.receive()).data for _ in range(2)] == ["A", "B"]
    assert calls == ["a", "b"]
    for v in views:
        await v.aclose()


async def test_cast_events_with_another_function_runs_its_own() -> None:
    bc: Broadcaster[str, str] = Broadcaster()
    seen: list[tuple[str, str]] = []

    def tagged(tag: str) -> Callable[[str], Event]:
        def fn(text: str) -> Event:
            seen.append((tag, text))
            return Event(f"{tag}:{text}")

        return fn

    a = bc.subscribe("k").cast_events(tagged("a"))
    b = bc.subscribe("k").cast_events(tagged("b"))
    bc.send("k", "x")
    assert [(await a.receive()).data, (await b.receive()).data] == ["a:x", "b:x"]
    assert seen == [("a", "x"), ("b", "x")]
    await a.aclose()
    await b.aclose()


async def test_the_cast_memo_is_bounded_and_goes_with_the_key() -> None:
    from trio_sse._broadcast import _MEMO_SIZE

    bc: Broadcaster[str, int] = Broadcaster(buffer=_MEMO_SIZE * 2)
    view = bc.subscribe("k").cast_events(lambda n: Event(str(n)))
    for n in range(_MEMO_SIZE + 10):
        bc.send("k", n)
    got = view.receive_batch_nowait(_MEMO_SIZE * 2)
    assert [e.data for e in got] == [str(n) for n in range(_MEMO_SIZE + 10)]
    (memo,) = bc._topics["k"].memos.values()
    assert 0 < len(memo) <= _MEMO_SIZE
    await view.aclose()
    assert "k" not in bc._topics


async def test_an_unwritable_cast_is_raised_to_every_subscriber() -> None:
    bc: Broadcaster[str, object] = Broadcaster()

    def fn(item: object) -> Event:
        return item  # type: ignore[return-value]

    views = [bc.subscribe("k").cast_events(fn) for _ in range(3)]
    bc.send("k", "not an event")
    bc.send("k", Event("fine"))
    for view in views:
        with pytest.raises(trio_sse.UnwritableItem):
            view.receive_nowait()
        assert view.receive_nowait().data == "fine"
        await view.aclose()
