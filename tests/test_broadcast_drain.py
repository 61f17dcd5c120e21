"""_StreamEventsOf.drain_encoded(): the response's batch read of a broadcast.

It must give the bytes that repeated ``receive_nowait()`` calls give.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import trio
import trio.testing

from trio_sse import Broadcaster, Event, LagPolicy, SseConfig
from trio_sse._broadcast import _StreamEventsOf
from trio_sse.testing import open_stream

CONFIG = SseConfig(keep_alive=None)

_open: list[_StreamEventsOf] = []


@pytest.fixture(autouse=True)
def _close_views() -> Iterator[None]:
    yield
    while _open:
        _open.pop()._source.close()


def view(
    bc: Broadcaster[str, Any], policy: LagPolicy | None = None, **kwargs: Any
) -> _StreamEventsOf:
    stream = bc.subscribe("k", **kwargs).on_lag(policy)
    events = bc.response(stream).stream
    assert isinstance(events, _StreamEventsOf)
    _open.append(events)
    return events


def cast_view(bc: Broadcaster[str, Any]) -> _StreamEventsOf:
    stream = bc.subscribe("k")
    _open.append(bc.response(stream).stream)  # type: ignore[arg-type]
    events = bc.response(stream.cast_events(lambda n: Event(data=str(n)))).stream
    assert isinstance(events, _StreamEventsOf)
    return events


def per_item(
    events: _StreamEventsOf, size: int, limit: int
) -> tuple[list[bytes], int, bool]:
    # What the writer does without drain_encoded().
    parts: list[bytes] = []
    try:
        while size < limit:
            data = events.receive_nowait().encode()
            parts.append(data)
            size += len(data)
    except trio.WouldBlock:
        return parts, size, False
    except trio.EndOfChannel:
        return parts, size, True
    return parts, size, False


def drained(
    events: _StreamEventsOf, size: int, limit: int
) -> tuple[list[bytes], int, bool]:
    parts: list[bytes] = []
    size, ended = events.drain_encoded(parts, size, limit)
    return parts, size, ended


def twins(
    **kwargs: Any,
) -> tuple[Broadcaster[str, Any], _StreamEventsOf, _StreamEventsOf]:
    bc: Broadcaster[str, Any] = Broadcaster(config=CONFIG, **kwargs)
    return bc, view(bc), view(bc)


def test_burst_is_drained_in_one_call() -> None:
    bc, a, b = twins()
    for i in range(5):
        bc.send("k", Event(data=f"e{i}"))
    bc.send("k", "text")
    bc.send("k", Event(data="own id", id="x"))
    parts, size, ended = drained(a, 0, 1 << 20)
    assert (parts, size, ended) == per_item(b, 0, 1 << 20)
    assert len(parts) == 7 and not ended
    assert size == sum(map(len, parts))
    assert parts[0].endswith(b"\ndata: e0\n\n")
    assert b"data: text\n" in parts[5]
    assert b"id: x\n" in parts[6]
    assert a.last_id == b.last_id is not None
    # Nothing more is ready.
    assert drained(a, 0, 1 << 20) == ([], 0, False)


def test_ids_are_filled_from_the_broadcaster() -> None:
    bc, a, _ = twins()
    bc.send("k", Event(data="x"))
    parts, _, _ = drained(a, 0, 1 << 20)
    assert a.last_id is not None
    assert parts == [Event(data="x", id=a.last_id).encode()]


@pytest.mark.parametrize("limit", [1, 10, 25, 40, 1000])
@pytest.mark.parametrize("start", [0, 5])
def test_coalesce_bound_is_respected(limit: int, start: int) -> None:
    bc, a, b = twins()
    for i in range(20):
        bc.send("k", Event(data=f"event {i}"))
    parts, size, ended = drained(a, start, limit)
    assert (parts, size, ended) == per_item(b, start, limit)
    # Reads while below the bound: at most one event past it.
    if start >= limit:
        assert parts == []
    else:
        assert size >= min(limit, start + sum(map(len, parts)))
        assert size - len(parts[-1]) < limit
    # The rest comes with the next calls, in order.
    while True:
        more_a = drained(a, 0, limit)
        assert more_a == per_item(b, 0, limit)
        if not more_a[0]:
            break
    assert a.last_id == b.last_id


def test_lag_between_batches_ends_the_stream() -> None:
    bc, a, b = twins(buffer=3)
    for i in range(2):
        bc.send("k", Event(data=f"e{i}"))
    assert drained(a, 0, 1 << 20) == per_item(b, 0, 1 << 20)
    for i in range(5):
        bc.send("k", Event(data=f"f{i}"))
    # Without a policy a response ends on a lag, before the newer items.
    assert drained(a, 0, 1 << 20) == ([], 0, True) == per_item(b, 0, 1 << 20)
    assert a._source.closed and b._source.closed
    assert drained(a, 0, 1 << 20) == ([], 0, True)


def test_lag_policy_end_drains_what_is_held_then_ends() -> None:
    bc: Broadcaster[str, Any] = Broadcaster(buffer=3, config=CONFIG)
    a, b = view(bc, LagPolicy.END), view(bc, LagPolicy.END)
    for i in range(6):
        bc.send("k", Event(data=f"e{i}"))
    parts, size, ended = drained(a, 0, 1 << 20)
    assert (parts, size, ended) == per_item(b, 0, 1 << 20)
    assert ended


def test_lag_policy_skip_drains_the_newest() -> None:
    bc: Broadcaster[str, Any] = Broadcaster(buffer=3, config=CONFIG)
    a, b = view(bc, LagPolicy.SKIP), view(bc, LagPolicy.SKIP)
    for i in range(6):
        bc.send("k", Event(data=f"e{i}"))
    parts, size, ended = drained(a, 0, 1 << 20)
    assert (parts, size, ended) == per_item(b, 0, 1 << 20)
    assert len(parts) == 3 and not ended


def test_replay_then_live_without_duplicates() -> None:
    bc: Broadcaster[str, Any] = Broadcaster(history=10, config=CONFIG)
    probe = view(bc)
    for i in range(4):
        bc.send("k", Event(data=f"old{i}"))
    bc.send("k", Event(data="marker"))
    per_item(probe, 0, 1)
    first_id = probe.last_id
    assert first_id is not None
    a = view(bc, last_event_id=first_id)
    b = view(bc, last_event_id=first_id)
    for i in range(3):
        bc.send("k", Event(data=f"new{i}"))
    parts, size, ended = drained(a, 0, 1 << 20)
    assert (parts, size, ended) == per_item(b, 0, 1 << 20)
    datas = [p.split(b"data: ")[1].split(b"\n")[0] for p in parts]
    assert datas == [b"old1", b"old2", b"old3", b"marker", b"new0", b"new1", b"new2"]
    assert a.last_id == b.last_id


def test_replay_is_drained_across_small_batches() -> None:
    bc: Broadcaster[str, Any] = Broadcaster(history=10, config=CONFIG)
    probe = view(bc)
    for i in range(5):
        bc.send("k", Event(data=f"old{i}"))
    per_item(probe, 0, 1)
    assert probe.last_id is not None
    a = view(bc, last_event_id=probe.last_id)
    b = view(bc, last_event_id=probe.last_id)
    bc.send("k", Event(data="new"))
    got = []
    while True:
        batch = drained(a, 0, 1)
        assert batch == per_item(b, 0, 1)
        if not batch[0]:
            break
        got += batch[0]
    assert len(got) == 5  # four replayed, one live
    assert a.last_id == b.last_id


def test_bad_item_raises_after_the_events_before_it() -> None:
    bc: Broadcaster[str, Any] = Broadcaster(config=CONFIG)
    a = view(bc)
    bc.send("k", Event(data="one"))
    bc.send("k", "two")
    bc.send("k", 42)
    bc.send("k", Event(data="four"))
    parts: list[bytes] = []
    with pytest.raises(TypeError, match="Event or str items, got int"):
        a.drain_encoded(parts, 0, 1 << 20)
    assert [p.split(b"data: ")[1] for p in parts] == [b"one\n\n", b"two\n\n"]


async def test_bad_item_ends_the_response_after_the_events_before_it() -> None:
    bc: Broadcaster[str, Any] = Broadcaster(config=CONFIG)
    stream = bc.subscribe("k")
    bc.send("k", Event(data="one"))
    bc.send("k", 42)
    bc.send("k", Event(data="three"))
    response = bc.response(stream)
    with trio.fail_after(5):
        async with open_stream(response, "/") as events:
            got = [event.data async for event in events]
    assert got == ["one"]
    assert stream.closed


def test_cast_view_goes_through_receive_nowait() -> None:
    bc: Broadcaster[str, Any] = Broadcaster(config=CONFIG)
    a, b = cast_view(bc), cast_view(bc)
    for i in range(4):
        bc.send("k", i)
    parts, size, ended = drained(a, 0, 1 << 20)
    assert (parts, size, ended) == per_item(b, 0, 1 << 20)
    assert len(parts) == 4


def test_closed_and_ended_streams_report_the_end() -> None:
    bc, a, b = twins()
    bc.send("k", Event(data="x"))
    bc.remove("k")
    assert drained(a, 0, 1 << 20) == per_item(b, 0, 1 << 20)
    assert drained(a, 0, 1 << 20)[2] is True
    a._source.close()
    assert drained(a, 0, 1 << 20) == ([], 0, True)


async def test_burst_reaches_the_client_coalesced() -> None:
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
        # One body for the whole burst.
        assert chunk.count(b"data:") == 50
