"""History and ``Last-Event-ID`` replay: no gap, no duplicate, honest flags."""

from __future__ import annotations

import random

import pytest
import trio
import trio.testing

from trio_sse import Broadcaster, BroadcastStream, Event, Lagged
from trio_sse._backend import parse_event_id


def seq(event_id: str) -> tuple[int, int]:
    parsed = parse_event_id(event_id)
    assert parsed is not None
    return parsed


async def take(stream: BroadcastStream[int], count: int) -> list[int]:
    return [await stream.__anext__() for _ in range(count)]


async def assert_waits(stream: BroadcastStream[int]) -> None:
    with trio.CancelScope() as scope:
        scope.cancel()
        await stream.__anext__()
    assert scope.cancelled_caught


async def publish_all(bc: Broadcaster[str, int], items: range) -> list[str]:
    return [await bc.publish("k", i) for i in items]


async def test_history_records_without_subscribers_and_replays() -> None:
    bc: Broadcaster[str, int] = Broadcaster(history=5)
    ids = await publish_all(bc, range(1, 4))
    assert bc.keys() == []
    async with bc.subscribe("k", last_event_id=ids[0]) as stream:
        assert stream.replay_complete
        bc.send("k", 4)
        assert await take(stream, 3) == [2, 3, 4]
        await assert_waits(stream)


async def test_last_id_follows_replayed_items() -> None:
    bc: Broadcaster[str, int] = Broadcaster(history=5)
    ids = await publish_all(bc, range(1, 4))
    async with bc.subscribe("k", last_event_id=ids[0]) as stream:
        assert stream.last_id is None
        await stream.__anext__()
        assert stream.last_id == ids[1]
        await stream.__anext__()
        assert stream.last_id == ids[2]


async def test_no_last_event_id_is_complete_and_live() -> None:
    bc: Broadcaster[str, int] = Broadcaster(history=5)
    await publish_all(bc, range(1, 4))
    async with bc.subscribe("k") as stream:
        assert stream.replay_complete
        await assert_waits(stream)


async def test_newest_id_replays_nothing() -> None:
    bc: Broadcaster[str, int] = Broadcaster(history=5)
    ids = await publish_all(bc, range(1, 4))
    async with bc.subscribe("k", last_event_id=ids[-1]) as stream:
        assert stream.replay_complete
        await assert_waits(stream)


async def test_history_is_per_key() -> None:
    bc: Broadcaster[str, int] = Broadcaster(history=5)
    first = await bc.publish("k", 1)
    await bc.publish("other", 99)
    await bc.publish("k", 2)
    async with bc.subscribe("k", last_event_id=first) as stream:
        assert await take(stream, 1) == [2]
        await assert_waits(stream)


async def test_id_of_another_key_is_unknown() -> None:
    # Each key has its own sequence: another key's id is no position in it.
    bc: Broadcaster[str, int] = Broadcaster(history=5)
    await bc.publish("k", 1)
    marker = await bc.publish("other", 99)
    await bc.publish("k", 2)
    async with bc.subscribe("k", last_event_id=marker) as stream:
        assert not stream.replay_complete
        await assert_waits(stream)
        bc.send("k", 3)
        assert await stream.__anext__() == 3


async def test_ids_of_a_key_ignore_traffic_on_other_keys() -> None:
    bc: Broadcaster[str, int] = Broadcaster(history=5)
    ids = []
    for i in range(4):
        ids.append(await bc.publish("k", i))
        for _ in range(i * 7):
            await bc.publish("other", i)
    assert [i.split("-")[1] for i in ids] == ["1", "2", "3", "4"]
    assert len({i.split("-")[0] for i in ids}) == 1


async def test_boundary_of_the_retained_history() -> None:
    bc: Broadcaster[str, int] = Broadcaster(history=3)
    ids = await publish_all(bc, range(1, 7))  # retains 4, 5, 6
    async with bc.subscribe("k", last_event_id=ids[2]) as stream:  # id of 3
        assert stream.replay_complete
        assert await take(stream, 3) == [4, 5, 6]
    async with bc.subscribe("k", last_event_id=ids[1]) as stream:  # id of 2
        assert not stream.replay_complete  # 3 was evicted: a gap
        await assert_waits(stream)  # starts live
        bc.send("k", 7)
        assert await stream.__anext__() == 7


@pytest.mark.parametrize(
    "bad_id",
    ["", "abc", "1-2-3", "-1", "1-", "12", "١-٢", "1-2 ", "9" * 50 + "-1"],
)
async def test_malformed_id_is_incomplete_and_live(bad_id: str) -> None:
    bc: Broadcaster[str, int] = Broadcaster(history=5)
    await publish_all(bc, range(1, 4))
    async with bc.subscribe("k", last_event_id=bad_id) as stream:
        assert not stream.replay_complete
        await assert_waits(stream)
        bc.send("k", 4)
        assert await stream.__anext__() == 4


async def test_id_of_another_broadcaster_is_unknown() -> None:
    earlier: Broadcaster[str, int] = Broadcaster(history=5)
    old_id = await earlier.publish("k", 1)
    bc: Broadcaster[str, int] = Broadcaster(history=5)
    await publish_all(bc, range(1, 4))
    async with bc.subscribe("k", last_event_id=old_id) as stream:
        assert not stream.replay_complete
        await assert_waits(stream)


async def test_id_never_issued_is_unknown() -> None:
    bc: Broadcaster[str, int] = Broadcaster(history=5)
    last = await bc.publish("k", 1)
    epoch, seq = last.split("-")
    async with bc.subscribe("k", last_event_id=f"{epoch}-{int(seq) + 1}") as stream:
        assert not stream.replay_complete


async def test_without_history_only_the_newest_id_is_complete() -> None:
    bc: Broadcaster[str, int] = Broadcaster()
    async with bc.subscribe("k"):
        ids = await publish_all(bc, range(1, 4))
        async with bc.subscribe("k", last_event_id=ids[-1]) as stream:
            assert stream.replay_complete
        async with bc.subscribe("k", last_event_id=ids[0]) as stream:
            assert not stream.replay_complete
            await assert_waits(stream)
    # The key had no subscriber for a while: items may have been missed.
    async with bc.subscribe("k", last_event_id=ids[-1]) as stream:
        assert not stream.replay_complete


async def test_remove_forgets_the_history() -> None:
    bc: Broadcaster[str, int] = Broadcaster(history=5)
    ids = await publish_all(bc, range(1, 4))
    bc.remove("k")
    after = await bc.publish("k", 4)
    assert seq(after) > max(map(seq, ids))
    for old in ids:
        # History cannot prove that nothing was missed since the removal.
        async with bc.subscribe("k", last_event_id=old) as stream:
            assert not stream.replay_complete
            await assert_waits(stream)
    async with bc.subscribe("k", last_event_id=after) as stream:
        assert stream.replay_complete
        bc.send("k", 5)
        assert await take(stream, 1) == [5]


async def test_replayed_event_is_the_shared_stamped_one() -> None:
    bc: Broadcaster[str, Event] = Broadcaster(history=5)
    first = await bc.publish("k", Event("a"))
    async with bc.subscribe("k") as live:
        second = await bc.publish("k", Event("b"))
        live_event = await live.__anext__()
    assert live_event.id == second
    async with bc.subscribe("k", last_event_id=first) as stream:
        assert await stream.__anext__() is live_event


async def test_lagged_is_raised_after_the_replayed_items() -> None:
    bc: Broadcaster[str, int] = Broadcaster(buffer=2, history=10)
    ids = await publish_all(bc, range(1, 4))
    async with bc.subscribe("k", last_event_id=ids[0]) as stream:
        for i in range(4, 8):
            bc.send("k", i)  # the channel holds 2: 4 and 5 are dropped
        assert await take(stream, 2) == [2, 3]
        with pytest.raises(Lagged) as info:
            await stream.__anext__()
        assert info.value.missed == 2
        assert await take(stream, 2) == [6, 7]


async def test_cast_events_fills_ids_of_replayed_items() -> None:
    bc: Broadcaster[str, int] = Broadcaster(history=5)
    ids = await publish_all(bc, range(1, 4))
    stream = bc.subscribe("k", last_event_id=ids[0])
    async with stream.cast_events(lambda i: Event(str(i))) as events:
        got = [await events.__anext__() for _ in range(2)]
    assert [(e.data, e.id) for e in got] == [("2", ids[1]), ("3", ids[2])]
    assert stream.closed


async def test_reconnects_get_no_gap_and_no_duplicate_while_publishing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # A publisher runs throughout; readers disconnect at random points and
    # reconnect with their last id: each sees exactly the reference sequence.
    bc: Broadcaster[str, int] = Broadcaster(buffer=1000, history=1000)
    total = 300
    rng = random.Random(1234)
    reference: list[int] = []
    seen: dict[int, list[int]] = {n: [] for n in range(5)}
    start = await bc.publish("k", -1)  # a position before every item below
    reference_stream = bc.subscribe("k")

    async def publisher() -> None:
        for i in range(total):
            await bc.publish("k", i)
            await trio.sleep(rng.random() / 100)

    async def reader(n: int) -> None:
        last_id = start
        while len(seen[n]) < total:
            async with bc.subscribe("k", last_event_id=last_id) as stream:
                assert stream.replay_complete
                for _ in range(rng.randrange(1, 40)):
                    if len(seen[n]) == total:
                        break
                    seen[n].append(await stream.__anext__())
                    last_id = stream.last_id
            await trio.sleep(rng.random() / 20)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(publisher)
        for n in seen:
            nursery.start_soon(reader, n)
        async with reference_stream:
            reference.extend([await reference_stream.__anext__() for _ in range(total)])
    assert reference == list(range(total))
    for items in seen.values():
        assert items == reference
