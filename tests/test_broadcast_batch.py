"""BroadcastStream.receive_batch_nowait(): one call for every ready item.

It must give what repeated ``receive_nowait()`` calls give, in the same
order, with the same lag, end and error outcomes, and lose nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import trio
import trio.testing

from trio_sse import (
    Broadcaster,
    BroadcastStream,
    Event,
    Lagged,
    LagPolicy,
    SseConfig,
    UnwritableItem,
)
from trio_sse._streams import as_event
from trio_sse.testing import open_stream

CONFIG = SseConfig(keep_alive=None)

_open: list[BroadcastStream[Any]] = []


@pytest.fixture(autouse=True)
def _close_streams() -> Iterator[None]:
    yield
    while _open:
        _open.pop().close()


def sub(
    bc: Broadcaster[str, Any], policy: LagPolicy | None = None, **kwargs: Any
) -> BroadcastStream[Any]:
    stream = bc.subscribe("k", **kwargs).on_lag(policy)
    _open.append(stream)
    return stream


def one_by_one(stream: BroadcastStream[Any]) -> list[object]:
    """Outcomes of receive_nowait() until nothing is ready or the end."""
    got: list[object] = []
    while True:
        try:
            got.append(stream.receive_nowait())
        except trio.WouldBlock:
            return got
        except trio.EndOfChannel:
            return [*got, "END"]
        except (Lagged, UnwritableItem) as exc:
            got.append(type(exc).__name__)


def batched(stream: BroadcastStream[Any], size: int = 64) -> list[object]:
    """Outcomes of receive_batch_nowait(size) until nothing is ready or the end."""
    got: list[object] = []
    while True:
        try:
            batch = stream.receive_batch_nowait(size)
        except trio.WouldBlock:
            return got
        except trio.EndOfChannel:
            return [*got, "END"]
        except (Lagged, UnwritableItem) as exc:
            got.append(type(exc).__name__)
            continue
        assert 1 <= len(batch) <= size
        got.extend(batch)


def twins(
    bc: Broadcaster[str, Any], policy: LagPolicy | None = None, **kwargs: Any
) -> tuple[BroadcastStream[Any], BroadcastStream[Any]]:
    return sub(bc, policy, **kwargs), sub(bc, policy, **kwargs)


@pytest.mark.parametrize("size", [1, 2, 3, 64])
def test_burst_in_batches_equals_one_by_one(size: int) -> None:
    bc: Broadcaster[str, Any] = Broadcaster(config=CONFIG)
    a, b = twins(bc)
    items = [Event(data=f"e{i}") for i in range(7)] + ["text"]
    for item in items:
        bc.send("k", item)
    got = batched(a, size)
    assert got == one_by_one(b)
    assert [getattr(x, "data", x) for x in got] == [
        *(f"e{i}" for i in range(7)),
        "text",
    ]
    assert a.last_id == b.last_id is not None
    assert batched(a) == []  # nothing more is ready


def test_at_least_one_and_at_most_max_items() -> None:
    bc: Broadcaster[str, int] = Broadcaster(config=CONFIG)
    stream = sub(bc)
    with pytest.raises(trio.WouldBlock):
        stream.receive_batch_nowait(10)
    for i in range(5):
        bc.send("k", i)
    assert stream.receive_batch_nowait(2) == [0, 1]
    assert stream.receive_batch_nowait(10) == [2, 3, 4]
    assert stream.statistics().current_buffer_used == 0


def test_lag_without_policy_is_raised_between_batches() -> None:
    bc: Broadcaster[str, Any] = Broadcaster(buffer=3, config=CONFIG)
    a, b = twins(bc)
    for i in range(2):
        bc.send("k", i)
    assert batched(a) == one_by_one(b) == [0, 1]
    for i in range(5):
        bc.send("k", i + 10)
    got = batched(a)
    assert got == one_by_one(b)
    assert got[0] == "Lagged" and got[1:] == [12, 13, 14]


def test_lag_policy_end_gives_what_is_held_then_ends() -> None:
    bc: Broadcaster[str, int] = Broadcaster(buffer=3, config=CONFIG)
    a, b = twins(bc, LagPolicy.END)
    for i in range(6):
        bc.send("k", i)
    assert batched(a) == one_by_one(b) == [0, 1, 2, "END"]


def test_lag_policy_skip_gives_the_newest() -> None:
    bc: Broadcaster[str, int] = Broadcaster(buffer=3, config=CONFIG)
    a, b = twins(bc, LagPolicy.SKIP)
    for i in range(6):
        bc.send("k", i)
    assert batched(a) == one_by_one(b) == [3, 4, 5]
    assert a.missed == b.missed == 3


@pytest.mark.parametrize("size", [1, 2, 64])
def test_replay_then_live_without_duplicates(size: int) -> None:
    bc: Broadcaster[str, str] = Broadcaster(history=10, config=CONFIG)
    probe = sub(bc)
    for i in range(4):
        bc.send("k", f"old{i}")
    probe.receive_nowait()
    first_id = probe.last_id
    assert first_id is not None
    a, b = twins(bc, last_event_id=first_id)
    for i in range(3):
        bc.send("k", f"new{i}")
    got = batched(a, size)
    assert got == one_by_one(b)
    assert got == ["old1", "old2", "old3", "new0", "new1", "new2"]
    assert a.last_id == b.last_id


def test_cast_view_fills_each_items_own_id() -> None:
    bc: Broadcaster[str, Any] = Broadcaster(config=CONFIG)
    a = sub(bc).cast_events(as_event)
    b = sub(bc).cast_events(as_event)
    ids = []
    probe = sub(bc)
    for i in range(4):
        bc.send("k", f"t{i}")
        probe.receive_nowait()
        ids.append(probe.last_id)
    got = batched(a)
    assert got == one_by_one(b)
    assert [e.id for e in got] == ids  # type: ignore[union-attr]


@pytest.mark.parametrize("size", [1, 2, 64])
def test_unwritable_item_is_raised_in_place_and_nothing_is_lost(size: int) -> None:
    bc: Broadcaster[str, Any] = Broadcaster(config=CONFIG)
    a = sub(bc).cast_events(as_event)
    b = sub(bc).cast_events(as_event)
    for item in [Event(data="one"), "two", 42, Event(data="four"), {"x": 1}, "six"]:
        bc.send("k", item)
    got = batched(a, size)
    assert got == one_by_one(b)
    assert [getattr(x, "data", x) for x in got] == [
        "one",
        "two",
        "UnwritableItem",
        "four",
        "UnwritableItem",
        "six",
    ]


def test_closed_and_removed_streams_report_the_end() -> None:
    bc: Broadcaster[str, str] = Broadcaster(config=CONFIG)
    a, b = twins(bc)
    bc.send("k", "x")
    bc.remove("k")
    assert batched(a) == one_by_one(b) == ["x", "END"]
    c = sub(bc)
    c.close()
    with pytest.raises(trio.EndOfChannel):
        c.receive_batch_nowait(5)


def test_statistics_snapshot() -> None:
    bc: Broadcaster[str, int] = Broadcaster(buffer=4, config=CONFIG)
    stream = sub(bc, LagPolicy.SKIP)
    for i in range(6):
        bc.send("k", i)
    stats = stream.statistics()
    assert (stats.key, stats.current_buffer_used, stats.max_buffer_size) == ("k", 4, 4)
    assert (stats.missed, stats.closed, stats.replay_complete) == (2, False, True)
    stream.receive_batch_nowait(10)
    assert stream.statistics().last_id == stream.last_id is not None
    stream.close()
    assert stream.statistics().closed
    assert bc.statistics() == bc.stats()


async def test_bad_item_is_skipped_by_the_response() -> None:
    bc: Broadcaster[str, Any] = Broadcaster(config=CONFIG)
    stream = bc.subscribe("k")
    bc.send("k", Event(data="one"))
    bc.send("k", 42)
    bc.send("k", Event(data="three"))
    bc.send("k", b"data: not a block\n")
    bc.send("k", "five")
    response = bc.response(stream)
    with trio.fail_after(5):
        async with open_stream(response, "/") as events:
            got = [(await events.__anext__()).data for _ in range(3)]
    assert got == ["one", "three", "five"]
    assert stream.closed


async def test_burst_reaches_the_client_in_one_write() -> None:
    bc: Broadcaster[str, Any] = Broadcaster(config=CONFIG)
    response = bc.response(bc.subscribe("k"))
    async with open_stream(response, "/") as events:
        await trio.testing.wait_all_tasks_blocked()
        for i in range(50):
            bc.send("k", Event(data=f"e{i}"))
        with trio.fail_after(5):
            chunk = await events.receive_chunk()
            while b"data:" not in chunk:  # the opening comment
                chunk = await events.receive_chunk()
        assert chunk.count(b"data:") == 50
