"""Lag: item ``buffer + 1`` is the first that does not fit; each policy."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from trio_sse import Broadcaster, BroadcastStream, Event, Lagged, LagPolicy

BUFFER = 3


def fill(bc: Broadcaster[str, int], count: int, start: int = 1) -> None:
    for i in range(start, start + count):
        bc.send("k", i)


async def take(stream: BroadcastStream[int], count: int) -> list[int]:
    return [await stream.__anext__() for _ in range(count)]


async def assert_waits(stream: BroadcastStream[int]) -> None:
    """The stream holds nothing: the next item would be waited for."""
    with trio.CancelScope() as scope:
        scope.cancel()
        await stream.__anext__()
    assert scope.cancelled_caught


# -- default: Lagged once, oldest dropped ----------------------------------------


async def test_default_holds_buffer_items_without_lagging() -> None:
    bc: Broadcaster[str, int] = Broadcaster(BUFFER)
    async with bc.subscribe("k") as stream:
        fill(bc, BUFFER)
        assert await take(stream, BUFFER) == [1, 2, 3]
        assert stream.missed == 0
        assert bc.stats().lagged == 0


async def test_default_raises_lagged_once_then_continues_with_newest() -> None:
    bc: Broadcaster[str, int] = Broadcaster(BUFFER)
    async with bc.subscribe("k") as stream:
        assert bc.send("k", 0) == 1
        fill(bc, BUFFER + 2)  # 0..2 fit, then 3..5 push the oldest out
        with pytest.raises(Lagged) as info:
            await stream.__anext__()
        assert info.value.missed == 3
        assert stream.missed == 3
        # Tokio semantics: the oldest were dropped, the newest are held.
        assert await take(stream, BUFFER) == [3, 4, 5]
        await assert_waits(stream)
        bc.send("k", 6)
        assert await stream.__anext__() == 6  # no second Lagged


async def test_default_lags_at_exactly_buffer_plus_one() -> None:
    bc: Broadcaster[str, int] = Broadcaster(BUFFER)
    async with bc.subscribe("k") as stream:
        fill(bc, BUFFER + 1)
        with pytest.raises(Lagged) as info:
            await stream.__anext__()
        assert info.value.missed == 1
        assert await take(stream, BUFFER) == [2, 3, 4]


async def test_default_raises_again_for_a_later_lag() -> None:
    bc: Broadcaster[str, int] = Broadcaster(BUFFER)
    async with bc.subscribe("k") as stream:
        fill(bc, BUFFER + 1)
        with pytest.raises(Lagged):
            await stream.__anext__()
        assert await take(stream, BUFFER) == [2, 3, 4]
        fill(bc, BUFFER + 3, start=5)
        with pytest.raises(Lagged) as info:
            await stream.__anext__()
        assert info.value.missed == 3
        assert stream.missed == 4
        assert await take(stream, BUFFER) == [8, 9, 10]
    assert bc.stats().lagged == 2


async def test_lagged_comes_after_the_item_a_waiting_reader_was_handed() -> None:
    bc: Broadcaster[str, int] = Broadcaster(2)
    stream = bc.subscribe("k")
    got: list[object] = []
    async with trio.open_nursery() as nursery:

        async def consume() -> None:
            while True:
                try:
                    got.append(await stream.__anext__())
                except Lagged as exc:
                    got.append(exc)
                except StopAsyncIteration:
                    return

        nursery.start_soon(consume)
        await trio.testing.wait_all_tasks_blocked()
        fill(bc, 4)  # 1 is handed to the waiting reader, 2 is dropped
        await trio.testing.wait_all_tasks_blocked()
        await stream.aclose()
    assert got[0] == 1
    assert isinstance(got[1], Lagged) and got[1].missed == 1
    assert got[2:] == [3, 4]


# -- SKIP -------------------------------------------------------------------------


async def test_skip_at_exactly_buffer() -> None:
    bc: Broadcaster[str, int] = Broadcaster(BUFFER)
    async with bc.subscribe("k").on_lag(LagPolicy.SKIP) as stream:
        fill(bc, BUFFER)
        assert await take(stream, BUFFER) == [1, 2, 3]
        assert stream.missed == 0


async def test_skip_drops_the_oldest_and_counts_them() -> None:
    bc: Broadcaster[str, int] = Broadcaster(BUFFER)
    async with bc.subscribe("k").on_lag(LagPolicy.SKIP) as stream:
        assert fill(bc, BUFFER + 1) is None
        assert stream.missed == 1
        assert await take(stream, BUFFER) == [2, 3, 4]
        fill(bc, 10, start=5)
        assert stream.missed == 8
        assert await take(stream, BUFFER) == [12, 13, 14]
        await assert_waits(stream)
    stats = bc.stats()
    assert stats.missed == 8
    assert stats.lagged == 2  # two episodes: the reader caught up in between


async def test_skip_keeps_counting_the_subscriber() -> None:
    bc: Broadcaster[str, int] = Broadcaster(1)
    async with bc.subscribe("k").on_lag(LagPolicy.SKIP):
        assert [bc.send("k", i) for i in range(3)] == [1, 1, 1]


# -- END --------------------------------------------------------------------------


async def test_end_at_exactly_buffer_does_not_end() -> None:
    bc: Broadcaster[str, int] = Broadcaster(BUFFER)
    async with bc.subscribe("k").on_lag(LagPolicy.END) as stream:
        fill(bc, BUFFER)
        assert bc.subscriber_count("k") == 1
        assert await take(stream, BUFFER) == [1, 2, 3]
        bc.send("k", 4)
        assert await stream.__anext__() == 4


async def test_end_ends_after_what_it_holds() -> None:
    bc: Broadcaster[str, int] = Broadcaster(BUFFER)
    lagging = bc.subscribe("k").on_lag(LagPolicy.END)
    async with bc.subscribe("k") as keeping:
        fill(bc, BUFFER)
        assert await take(keeping, BUFFER) == [1, 2, 3]
        assert bc.send("k", 4) == 1  # queued for ``keeping`` only
        assert bc.subscriber_count("k") == 1
        assert lagging.missed == 1
        assert [i async for i in lagging] == [1, 2, 3]
        assert lagging.closed
        assert lagging.last_id is not None  # what the client reconnects with
        assert await keeping.__anext__() == 4
    assert bc.keys() == []
    stats = bc.stats()
    assert (stats.lagged, stats.missed) == (1, 1)


async def test_end_of_the_last_subscriber_drops_the_key() -> None:
    bc: Broadcaster[str, int] = Broadcaster(1)
    stream = bc.subscribe("k").on_lag(LagPolicy.END)
    assert bc.send("k", 1) == 1
    assert bc.send("k", 2) == 0
    assert bc.keys() == []
    assert [i async for i in stream] == [1]


async def test_policies_mixed_on_one_key() -> None:
    bc: Broadcaster[str, int] = Broadcaster(1)
    end = bc.subscribe("k").on_lag(LagPolicy.END)
    skip = bc.subscribe("k").on_lag(LagPolicy.SKIP)
    default = bc.subscribe("k")
    fill(bc, 3)
    assert [i async for i in end] == [1]
    assert await skip.__anext__() == 3
    with pytest.raises(Lagged):
        await default.__anext__()
    assert await default.__anext__() == 3
    await skip.aclose()
    await default.aclose()


# -- on_lag itself -----------------------------------------------------------------


async def test_on_lag_returns_the_stream_and_none_restores_the_default() -> None:
    bc: Broadcaster[str, int] = Broadcaster(1)
    async with bc.subscribe("k") as stream:
        assert stream.on_lag(LagPolicy.SKIP) is stream
        assert stream.on_lag(None) is stream
        fill(bc, 2)
        with pytest.raises(Lagged):
            await stream.__anext__()


def test_on_lag_rejects_other_values() -> None:
    bc: Broadcaster[str, int] = Broadcaster(1)
    stream = bc.subscribe("k")
    with pytest.raises(TypeError, match="LagPolicy"):
        stream.on_lag("skip")  # type: ignore[arg-type]
    stream.close()


async def test_on_lag_of_a_cast_view_applies_to_the_subscription() -> None:
    bc: Broadcaster[str, int] = Broadcaster(1)
    async with (
        bc.subscribe("k")
        .cast_events(lambda i: Event(str(i)))
        .on_lag(LagPolicy.SKIP) as events
    ):
        fill(bc, 3)
        assert (await events.__anext__()).data == "3"
        assert events.missed == 2
