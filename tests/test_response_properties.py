"""Properties of the writer over random event schedules, in virtual time."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from typing import Any

import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from trio_sse import Event, EventParser, SseConfig, SseResponse
from trio_sse.testing import open_stream


def run_schedule(
    gaps: list[int], keep_alive: int, channel: bool
) -> tuple[list[tuple[float, bytes]], list[float]]:
    """Stream one event after each gap; return (time, chunk) pairs and send times."""
    sent_at: list[float] = []
    chunks: list[tuple[float, bytes]] = []

    async def generator() -> AsyncIterator[Event]:
        for i, gap in enumerate(gaps):
            await trio.sleep(gap)
            sent_at.append(trio.current_time())
            yield Event(f"e{i}", id=str(i))

    async def feed(tx: trio.MemorySendChannel[Any]) -> None:
        with tx:
            async for event in generator():
                await tx.send(event)

    async def main() -> None:
        config = SseConfig(keep_alive=keep_alive)
        async with trio.open_nursery() as nursery:
            if channel:
                tx, rx = trio.open_memory_channel[Any](1000)
                nursery.start_soon(feed, tx)
                response = SseResponse(rx, config=config)
            else:
                response = SseResponse(generator(), config=config)
            async with open_stream(response, "/") as stream:
                while True:
                    try:
                        chunk = await stream.receive_chunk()
                    except trio.EndOfChannel:
                        break
                    chunks.append((trio.current_time(), chunk))

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    return chunks, sent_at


@settings(max_examples=60, deadline=None)
@given(
    gaps=st.lists(st.integers(min_value=0, max_value=40), max_size=12),
    keep_alive=st.integers(min_value=1, max_value=20),
    channel=st.booleans(),
)
def test_no_event_is_delayed_and_keep_alive_is_exact(
    gaps: list[int], keep_alive: int, channel: bool
) -> None:
    chunks, sent_at = run_schedule(gaps, keep_alive, channel)
    parser = EventParser()
    received: list[tuple[float, str]] = []
    for at, chunk in chunks:
        received.extend((at, event.data) for event in parser.feed(chunk))
    # Every event arrives, in order, at the very moment it was produced.
    assert received == [(at, f"e{i}") for i, at in enumerate(sent_at)]
    # The opening comment goes out at once (with any event already waiting).
    assert chunks[0][0] == 0
    assert chunks[0][1].startswith(b":\n")
    # Keep-alives come exactly keep_alive after the previous chunk, and the
    # connection is never silent for longer than that.
    for (before, _), (at, chunk) in itertools.pairwise(chunks):
        assert at - before <= keep_alive
        if chunk == b":\n":
            assert at - before == keep_alive
