"""Properties of the client over random chunkings and random dropped connections.

A "server" with a numbered list of events resumes after the client's
``Last-Event-ID``; each connection sends the rest of the stream in random
chunks and may break at a random byte. Whatever the schedule, the client
hands out every event exactly once, in order, and its ``last_event_id``
always names the latest event handed out.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator

import httpx
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from trio_sse import Event, EventParser
from trio_sse.client import open_event_source

URL = "http://sse.test/events"

texts = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"),
    max_size=12,
)
events_strategy = st.lists(
    st.builds(
        lambda data, name: Event(data, event=name or None),
        texts,
        st.sampled_from(["", "tick", "ünï"]),
    ),
    min_size=1,
    max_size=8,
)


class ChunkedBody(httpx.AsyncByteStream):
    def __init__(self, chunks: list[bytes], breaks: bool) -> None:
        self.chunks = chunks
        self.breaks = breaks

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            await trio.lowlevel.checkpoint()
            yield chunk
        if self.breaks:
            raise httpx.ReadError("connection reset")


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds) if b > a]


@settings(max_examples=60, deadline=None)
@given(
    events=events_strategy,
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=12),
    drops=st.lists(st.integers(min_value=0, max_value=10_000), max_size=4),
)
def test_every_event_exactly_once_in_order(
    events: list[Event], cuts: list[int], drops: list[int]
) -> None:
    numbered = [event.with_id(str(n)) for n, event in enumerate(events, 1)]
    wire = [event.encode() for event in numbered]
    expected = EventParser().feed(b"".join(wire))
    drops = list(drops)

    async def handle(request: httpx.Request) -> httpx.Response:
        resume = int(request.headers.get("last-event-id", "0"))
        rest = b"".join(wire[resume:])
        breaks = bool(drops) and bool(rest)
        if breaks:
            rest = rest[: drops.pop(0) % len(rest)]
        return httpx.Response(
            200,
            headers={"content-type": "text/event-stream"},
            stream=ChunkedBody(split(rest, cuts), breaks),
        )

    async def main() -> None:
        client = httpx.AsyncClient(transport=httpx.MockTransport(handle))
        got = []
        async with client, open_event_source(URL, client=client, retry=0.5) as source:
            for _ in expected:
                event = await source.__anext__()
                got.append(event)
                assert source.last_event_id == event.last_event_id
        assert got == expected

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
