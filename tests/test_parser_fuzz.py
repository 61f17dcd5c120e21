"""Differential fuzzing: EventParser against a literal reading of the spec.

``reference`` transcribes the HTML standard's "interpreting an event stream"
step by step, decoding the whole stream at once and walking it line by line.
It is slow and obviously right; :class:`EventParser` must agree with it on
any bytes, however they are split.
"""

from __future__ import annotations

import itertools
import random
import re
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trio_sse import EventParser, MessageEvent
from trio_sse._parser import ParseError

Result = tuple[list[MessageEvent], str, int | None, list[str]]


def reference(stream: bytes) -> Result:
    """The spec's algorithm, literally (plus the 64-bit bound on ``retry``)."""
    text = stream.decode("utf-8", "replace")  # UTF-8 decode: invalid -> U+FFFD
    if text.startswith("\ufeff"):  # one leading BOM is ignored
        text = text[1:]
    lines = re.split("\r\n|\r|\n", text)
    lines.pop()  # an unterminated last line is never processed
    events: list[MessageEvent] = []
    comments: list[str] = []
    data = event_type = id_buffer = last_event_id = ""
    retry: int | None = None
    block_retry: int | None = None
    for line in lines:
        if line == "":
            # Dispatch the event.
            last_event_id = id_buffer
            if data == "":
                event_type = ""
                block_retry = None
                continue
            if data.endswith("\n"):
                data = data[:-1]
            events.append(
                MessageEvent(event_type or "message", data, last_event_id, block_retry)
            )
            data = event_type = ""
            block_retry = None
        elif line.startswith(":"):
            comments.append(line[2:] if line.startswith(": ") else line[1:])
        else:
            if ":" in line:
                name, value = line.split(":", 1)
                if value.startswith(" "):
                    value = value[1:]
            else:
                name, value = line, ""
            if name == "event":
                event_type = value
            elif name == "data":
                data += value + "\n"
            elif name == "id":
                if "\0" not in value:
                    id_buffer = value
            elif name == "retry" and value and all(c in "0123456789" for c in value):
                significant = value.lstrip("0") or "0"
                if len(significant) <= 20 and int(significant) < 2**64:
                    retry = block_retry = int(significant)
    return events, last_event_id, retry, comments


def parse(chunks: Sequence[bytes]) -> Result:
    comments: list[str] = []
    parser = EventParser(on_comment=comments.append)
    events: list[MessageEvent] = []
    for chunk in chunks:
        events.extend(parser.feed(chunk))
    return events, parser.last_event_id, parser.retry, comments


TOKENS = [
    b"data",
    b"data:",
    b"data: ",
    b"data: x\n",
    b"id",
    b"id: ",
    b"event:",
    b"event: e\n",
    b"retry:",
    b"retry: 7\n",
    b":",
    b": c\n",
    b" ",
    b"  ",
    b"\t",
    b"\n",
    b"\r",
    b"\r\n",
    b"\n\n",
    b"\r\r",
    b"x",
    b"0",
    b"9",
    b"+",
    b"\x00",
    b"\xef\xbb\xbf",
    b"\xef\xbb",
    b"\xe2\x82",
    b"\xc3\xa9",
    b"\xf0\x9f\x98\x80",
    b"\xed\xa0\x80",
    b"\xff",
    "\u2028".encode(),
    "\u0663".encode(),
]
streams = st.one_of(
    st.binary(max_size=300),
    st.lists(st.sampled_from(TOKENS), max_size=80).map(b"".join),
)


@settings(max_examples=200, deadline=None)
@given(streams, st.lists(st.integers(min_value=0, max_value=10_000), max_size=10))
def test_agrees_with_reference(data: bytes, points: list[int]) -> None:
    bounds = [0, *sorted(p % (len(data) + 1) for p in points), len(data)]
    chunks = [data[a:b] for a, b in itertools.pairwise(bounds)]
    assert parse(chunks) == reference(data)


SEEDS = [
    b"data: YHOO\ndata: +2\ndata: 10\n\n",
    b": test stream\n\ndata: first event\nid: 1\n\ndata:second event\nid\n\n",
    b"data\n\ndata\ndata\n\ndata:",
    b"\xef\xbb\xbfevent: add\r\ndata: 73857293\r\n\r\nretry: 1500\r\r",
    b"id: 1\x002\ndata: caf\xc3\xa9\n\nretry: +5\nretry: 10\n\n",
]


def mutate(rng: random.Random, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(4)
        pos = rng.randint(0, len(out))
        if op == 0 and out:  # flip a byte
            out[min(pos, len(out) - 1)] = rng.randrange(256)
        elif op == 1:  # insert a meaningful byte
            out[pos:pos] = rng.choice([b"\r", b"\n", b":", b" ", b"\x00", b"\xef"])
        elif op == 2:  # delete a run
            del out[pos : pos + rng.randint(1, 3)]
        else:  # duplicate a slice
            out[pos:pos] = out[rng.randint(0, len(out)) :][: rng.randint(1, 8)]
    return bytes(out)


@pytest.mark.parametrize("seed", range(4))
def test_mutated_corpus_agrees_with_reference(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(500):
        data = mutate(rng, rng.choice(SEEDS))
        whole = reference(data)
        assert parse([data]) == whole, data
        cuts = sorted(rng.randint(0, len(data)) for _ in range(rng.randint(1, 5)))
        chunks = [data[a:b] for a, b in itertools.pairwise([0, *cuts, len(data)])]
        assert parse(chunks) == whole, chunks
        # With a limit: events, or ParseError, never anything else.
        limited = EventParser(max_event_size=rng.randint(1, 64))
        try:
            for chunk in chunks:
                limited.feed(chunk)
        except ParseError:
            pass
