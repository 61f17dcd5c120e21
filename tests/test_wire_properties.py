"""Property tests of the wire format: splitting, round trips, fuzzing."""

from __future__ import annotations

import datetime
import itertools
import re
from collections.abc import Sequence

from hypothesis import given, settings
from hypothesis import strategies as st

from trio_sse import Event, EventParser, MessageEvent, comment
from trio_sse._event import retry_ms
from trio_sse._parser import ParseError

wire_settings = settings(max_examples=200, deadline=None)
interop_settings = settings(max_examples=100, deadline=None)

# Pieces of an event stream, so random streams often mean something.
TOKENS = [
    b"data: a\r",
    b"data: b\r\n",
    b"\r\r\n",
    b"id: 1\n",
    b"data",
    b"data:",
    b"data: ",
    b"id:",
    b"event:",
    b"retry:",
    b"retry: 12",
    b":",
    b" ",
    b"\n",
    b"\r",
    b"\r\n",
    b"\n\n",
    b"x",
    b"5",
    b"\x00",
    b"\xef\xbb\xbf",
    b"\xef",
    b"\xc3",
    b"\xa9",
    b"\xf0\x9f\x98\x80",
    b"\xff",
]
streams = st.one_of(
    st.binary(max_size=200),
    st.lists(st.sampled_from(TOKENS), max_size=60).map(b"".join),
)
limits = st.one_of(st.none(), st.integers(min_value=1, max_value=40))


def cut(data: bytes, points: Sequence[int]) -> list[bytes]:
    bounds = [0, *sorted(p % (len(data) + 1) for p in points), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def parse(
    chunks: Sequence[bytes], max_event_size: int | None = None
) -> tuple[object, str, int | None, list[str]]:
    """Feed chunks; return (events or "ParseError", last id, retry, comments)."""
    comments: list[str] = []
    parser = EventParser(on_comment=comments.append, max_event_size=max_event_size)
    events: list[MessageEvent] = []
    try:
        for chunk in chunks:
            events.extend(parser.feed(chunk))
    except ParseError:
        return "ParseError", "", None, []
    return events, parser.last_event_id, parser.retry, comments


@wire_settings
@given(streams, st.lists(st.integers(min_value=0, max_value=10_000), max_size=12))
def test_any_split_gives_the_same_events(data: bytes, points: list[int]) -> None:
    whole = parse([data])
    assert parse(cut(data, points)) == whole
    assert parse([data[i : i + 1] for i in range(len(data))]) == whole


@wire_settings
@given(
    streams, st.lists(st.integers(min_value=0, max_value=10_000), max_size=12), limits
)
def test_any_split_fails_alike_with_a_limit(
    data: bytes, points: list[int], limit: int | None
) -> None:
    assert parse(cut(data, points), limit) == parse([data], limit)


@wire_settings
@given(
    streams, st.lists(st.integers(min_value=0, max_value=10_000), max_size=8), limits
)
def test_fuzz_parse_or_parse_error(
    data: bytes, points: list[int], limit: int | None
) -> None:
    parser = EventParser(max_event_size=limit, on_comment=lambda text: None)
    try:
        for chunk in cut(data, points):
            for event in parser.feed(chunk):
                assert type(event) is MessageEvent
                assert type(event.type) is str
                assert type(event.data) is str
                assert type(event.last_event_id) is str
                assert event.retry is None or 0 <= event.retry < 2**64
                assert event.type
                assert "\0" not in event.last_event_id
                assert "\r" not in event.data
        parser.close()
        assert parser.feed(b"data: ok\n\n")[0].data == "ok"
    except ParseError:
        assert limit is not None
    assert type(parser.last_event_id) is str
    assert parser.retry is None or 0 <= parser.retry < 2**64


# Text for events: any character but lone surrogates, with line breaks of all
# kinds (and the Unicode breaks the wire must not split on) made common.
chars = st.one_of(
    st.characters(exclude_categories=["Cs"]),
    st.sampled_from(["\r", "\n", "\r\n", "\u2028", "\x85", "\x0b", " ", ":"]),
)
text = st.lists(chars, max_size=30).map("".join)
single_line = text.map(lambda s: re.sub("[\r\n]", "", s))
retries = st.one_of(
    st.none(),
    st.integers(min_value=0, max_value=10**9),
    st.floats(min_value=0, max_value=1e9, allow_nan=False),
    st.timedeltas(min_value=datetime.timedelta(0)),
)
events = st.builds(
    Event,
    st.none() | text,
    id=st.none() | single_line.map(lambda s: s.replace("\0", "")),
    event=st.none() | single_line,
    retry=retries,
    comment=st.none() | text,
)


def lines(s: str) -> list[str]:
    return s.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def expected(
    sent: Sequence[Event | bytes],
) -> tuple[list[MessageEvent], str, int | None, list[str]]:
    """Model of what a reader gets from ``sent`` (events and comment bytes)."""
    last_id = ""
    retry = None
    out: list[MessageEvent] = []
    comments: list[str] = []
    for item in sent:
        if isinstance(item, bytes):
            comments += [
                line[2:] if line.startswith(": ") else line[1:]
                for line in item.decode().split("\n")[:-1]
            ]
            continue
        if item.comment is not None:
            comments += lines(item.comment)
        if item.id is not None:
            last_id = item.id
        ms = None if item.retry is None else retry_ms(item.retry)
        if ms is not None:
            retry = ms
        if item.data is not None:
            data = "\n".join(lines(item.data))
            out.append(MessageEvent(item.event or "message", data, last_id, ms))
    return out, last_id, retry, comments


@wire_settings
@given(events)
def test_event_round_trips(event: Event) -> None:
    assert parse([event.encode()]) == expected([event])


@wire_settings
@given(
    st.lists(st.one_of(events, text.map(comment)), max_size=8),
    st.lists(st.integers(min_value=0, max_value=10_000), max_size=12),
)
def test_event_sequences_round_trip_split_anywhere(
    sent: list[Event | bytes], points: list[int]
) -> None:
    wire = b"".join(item if isinstance(item, bytes) else item.encode() for item in sent)
    assert parse(cut(wire, points)) == expected(sent)


@wire_settings
@given(text)
def test_data_splits_on_cr_lf_crlf_only(data: str) -> None:
    body = Event(data).encode()
    assert body.endswith(b"\n\n")
    wire_lines = body[:-2].split(b"\n")
    assert len(wire_lines) == len(lines(data))
    assert all(line.startswith(b"data: ") for line in wire_lines)
    (message,) = EventParser().feed(body)
    assert message.data == data.replace("\r\n", "\n").replace("\r", "\n")


@wire_settings
@given(events)
def test_encode_is_deterministic_and_cached(event: Event) -> None:
    first = event.encode()
    assert event.encode() is first
    copy = Event(
        event.data,
        id=event.id,
        event=event.event,
        retry=event.retry,
        comment=event.comment,
    )
    assert copy == event
    assert copy.encode() == first


# Interoperability: what Event.encode() writes, other readers parse alike.
events_with_data = st.builds(
    Event,
    text,
    id=st.none() | single_line.map(lambda s: s.replace("\0", "")),
    event=st.none() | single_line,
    retry=retries,
    comment=st.none() | text,
)
sent_with_data = st.lists(
    st.one_of(events_with_data, text.map(comment)), min_size=1, max_size=8
)


def ours(sent: Sequence[Event | bytes]) -> list[tuple[str, str, str]]:
    wire = b"".join(item if isinstance(item, bytes) else item.encode() for item in sent)
    return [(e.type, e.data, e.last_event_id) for e in EventParser().feed(wire)]


@interop_settings
@given(sent_with_data, st.lists(st.integers(min_value=0, max_value=10_000), max_size=8))
def test_httpx_sse_reads_what_we_write(
    sent: list[Event | bytes], points: list[int]
) -> None:
    from httpx_sse._decoders import SSEDecoder, SSELineDecoder

    wire = b"".join(item if isinstance(item, bytes) else item.encode() for item in sent)
    text = wire.decode()
    bounds = [0, *sorted(p % (len(text) + 1) for p in points), len(text)]
    lines, decoder = SSELineDecoder(), SSEDecoder()
    theirs = []
    for a, b in itertools.pairwise(bounds):
        if a == b:
            continue  # httpx never hands the line decoder an empty chunk
        for line in lines.decode(text[a:b]):
            sse = decoder.decode(line)
            if sse is not None:
                theirs.append((sse.event, sse.data, sse.id))
    assert theirs == ours(sent)


@interop_settings
@given(sent_with_data)
def test_sseclient_py_reads_what_we_write(sent: list[Event | bytes]) -> None:
    from sseclient import SSEClient

    wire = b"".join(item if isinstance(item, bytes) else item.encode() for item in sent)
    chunks = [wire[i : i + 7] for i in range(0, len(wire), 7)]
    theirs = [(e.event, e.data, e.id) for e in SSEClient(iter(chunks)).events()]
    # sseclient-py does not carry ids from one event to the next.
    expected = []
    for item in sent:
        if isinstance(item, Event):
            data = "\n".join(lines(item.data or ""))
            expected.append((item.event or "message", data, item.id))
    assert theirs == expected
