"""EventParser: the WHATWG algorithm, table-driven, fed whole and in pieces."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from itertools import combinations, pairwise

import attrs
import pytest

import trio_sse
from trio_sse import EventParser, MessageEvent
from trio_sse._errors import SseError
from trio_sse._parser import ParseError

M = MessageEvent


@attrs.frozen
class Case:
    name: str
    wire: bytes
    events: list[MessageEvent]
    last_event_id: str = ""
    retry: int | None = None
    comments: list[str] = attrs.field(factory=list)


CASES: list[Case] = [
    # The examples of the HTML standard, one by one.
    Case(
        "spec-stock",
        b"data: YHOO\ndata: +2\ndata: 10\n\n",
        [M(data="YHOO\n+2\n10")],
    ),
    Case(
        "spec-first-second-third",
        b": test stream\n\ndata: first event\nid: 1\n\n"
        b"data:second event\nid\n\ndata:  third event\n\n",
        [
            M(data="first event", last_event_id="1"),
            M(data="second event", last_event_id=""),
            M(data=" third event", last_event_id=""),
        ],
        comments=["test stream"],
    ),
    Case(
        "spec-empty-data-and-trailing-unterminated",
        b"data\n\ndata\ndata\n\ndata:",
        [M(data=""), M(data="\n")],
    ),
    Case(
        "spec-space-after-colon-is-optional",
        b"data:test\n\ndata: test\n\n",
        [M(data="test"), M(data="test")],
    ),
    Case(
        "spec-counter",
        b"event: add\ndata: 73857293\n\nevent: remove\ndata: 2153\n\n"
        b"event: add\ndata: 113411\n\n",
        [M("add", "73857293"), M("remove", "2153"), M("add", "113411")],
    ),
    # Blank lines and blocks without data.
    Case("blank-lines-only", b"\n\n\n\n", []),
    Case("empty-stream", b"", []),
    Case("no-data-field-not-dispatched", b"event: x\n\n", []),
    Case("data-colon-empty", b"data:\n\n", [M(data="")]),
    Case("data-colon-space-empty", b"data: \n\n", [M(data="")]),
    Case("data-two-spaces", b"data:  x\n\n", [M(data=" x")]),
    Case("data-trailing-space-kept", b"data: x \n\n", [M(data="x ")]),
    Case("data-only-last-lf-removed", b"data\ndata\ndata\n\n", [M(data="\n\n")]),
    Case("colon-in-value", b"data: a:b: c\n\n", [M(data="a:b: c")]),
    Case("tab-not-stripped", b"data:\tx\n\n", [M(data="\tx")]),
    # Line ends.
    Case("crlf", b"data: a\r\ndata: b\r\n\r\n", [M(data="a\nb")]),
    Case("cr-only", b"data: a\rdata: b\r\r", [M(data="a\nb")]),
    Case("lf-cr", b"data: a\n\r", [M(data="a")]),
    Case("cr-crlf", b"data: a\r\r\n", [M(data="a")]),
    Case("cr-cr-lf", b"data: a\r\r\ndata: b\n\n", [M(data="a"), M(data="b")]),
    Case("mixed", b"data: a\rdata: b\r\ndata: c\n\r\n", [M(data="a\nb\nc")]),
    # A leading BOM is stripped once, and only at the very start.
    Case("bom", b"\xef\xbb\xbfdata: x\n\n", [M(data="x")]),
    Case("bom-alone", b"\xef\xbb\xbf", []),
    Case("two-boms", b"\xef\xbb\xbf\xef\xbb\xbfdata: x\n\ndata: y\n\n", [M(data="y")]),
    Case("bom-then-blank", b"\xef\xbb\xbf\n\ndata: x\n\n", [M(data="x")]),
    Case("bom-prefix-only", b"\xef\xbbdata: x\n\ndata: y\n\n", [M(data="y")]),
    Case("bom-later-kept", "data: \ufeffx\n\n".encode(), [M(data="\ufeffx")]),
    # Fields: names are case-sensitive, unknown ones are ignored.
    Case("no-colon-is-name-only", b"data\n\n", [M(data="")]),
    Case("unknown-field", b"foo: bar\ndata: x\nbaz\n\n", [M(data="x")]),
    Case("case-sensitive", b"Data: x\nDATA: y\n\n", []),
    Case("space-before-colon", b"data : x\n\n", []),
    Case("leading-space-name", b" data: x\n\n", []),
    # Event type.
    Case("event-empty-is-message", b"event:\ndata: x\n\n", [M("message", "x")]),
    Case(
        "event-reset-after-dispatch",
        b"event: a\ndata: x\n\ndata: y\n\n",
        [M("a", "x"), M("message", "y")],
    ),
    Case("event-reset-without-data", b"event: a\n\ndata: y\n\n", [M("message", "y")]),
    Case("event-last-wins", b"event: a\nevent: b\ndata: x\n\n", [M("b", "x")]),
    Case("event-with-space", b"event: a b\ndata: x\n\n", [M("a b", "x")]),
    # Ids: they persist, NUL makes one ignored, a block without data commits.
    Case(
        "id-persists",
        b"id: 1\ndata: a\n\ndata: b\n\n",
        [M(data="a", last_event_id="1"), M(data="b", last_event_id="1")],
        last_event_id="1",
    ),
    Case(
        "id-after-data-in-block",
        b"data: a\nid: 5\n\n",
        [M(data="a", last_event_id="5")],
        last_event_id="5",
    ),
    Case("id-without-data-commits", b"id: 9\n\n", [], last_event_id="9"),
    Case(
        "id-reset-by-empty",
        b"id: 1\n\nid\ndata: x\n\n",
        [M(data="x", last_event_id="")],
        last_event_id="",
    ),
    Case(
        "id-with-nul-ignored",
        b"id: 1\ndata: a\n\nid: 2\x003\ndata: b\n\n",
        [M(data="a", last_event_id="1"), M(data="b", last_event_id="1")],
        last_event_id="1",
    ),
    Case("id-nul-alone-ignored", b"id: \x00\ndata: b\n\n", [M(data="b")]),
    Case(
        "id-not-committed-without-blank-line",
        b"data: a\n\nid: 3\ndata: b",
        [M(data="a")],
        last_event_id="",
    ),
    Case(
        "id-unicode",
        "id: \u00e9\u263a\ndata: x\n\n".encode(),
        [M(data="x", last_event_id="\u00e9\u263a")],
        last_event_id="\u00e9\u263a",
    ),
    # Retry: ASCII digits only.
    Case("retry", b"retry: 1500\n", [], retry=1500),
    Case("retry-no-space", b"retry:1500\n", [], retry=1500),
    Case("retry-zero", b"retry: 0\n", [], retry=0),
    Case("retry-leading-zeros", b"retry: 007\n", [], retry=7),
    Case(
        "retry-last-valid-wins",
        b"retry: 5\nretry: x\nretry: 6\nretry: 1.5\n",
        [],
        retry=6,
    ),
    Case("retry-plus", b"retry: +5\n", []),
    Case("retry-minus", b"retry: -5\n", []),
    Case("retry-empty", b"retry:\nretry: \n", []),
    Case("retry-decimal", b"retry: 1.5\n", []),
    Case("retry-trailing-space", b"retry: 5 \n", []),
    Case("retry-two-spaces", b"retry:  5\n", []),
    Case("retry-hex", b"retry: 0x10\n", []),
    Case("retry-underscore", b"retry: 1_000\n", []),
    Case("retry-arabic-digit", "retry: \u0663\n".encode(), []),
    Case("retry-fullwidth-digit", "retry: \uff15\n".encode(), []),
    Case("retry-superscript", "retry: \u00b2\n".encode(), []),
    Case("retry-max-u64", b"retry: 18446744073709551615\n", [], retry=2**64 - 1),
    Case("retry-over-u64-ignored", b"retry: 18446744073709551616\n", []),
    Case("retry-huge-ignored", b"retry: " + b"9" * 5000 + b"\n", []),
    Case("retry-zeros-then-value", b"retry: " + b"0" * 5000 + b"12\n", [], retry=12),
    Case(
        "retry-in-message-is-block-local",
        b"retry: 10\ndata: x\n\ndata: y\n\n",
        [M(data="x", retry=10), M(data="y")],
        retry=10,
    ),
    Case(
        "retry-ignored-not-in-message",
        b"retry: 10\n\nretry: x\ndata: y\n\n",
        [M(data="y")],
        retry=10,
    ),
    # Comments.
    Case(
        "comments",
        b": one\n:two\n:\n:  three\ndata: x\n: four\n\n",
        [M(data="x")],
        comments=["one", "two", "", " three", "four"],
    ),
    Case("comment-colons", b":data: x\n\n", [], comments=["data: x"]),
    # UTF-8: multi-byte characters (split anywhere by the piecewise runs);
    # invalid bytes become U+FFFD.
    Case(
        "utf8",
        "data: caf\u00e9 \U0001f600\n\n".encode(),
        [M(data="caf\u00e9 \U0001f600")],
    ),
    Case("utf8-event", "event: \u00e9\ndata: x\n\n".encode(), [M("\u00e9", "x")]),
    Case("invalid-utf8", b"data: \xff\xfeA\n\n", [M(data="\ufffd\ufffdA")]),
    Case(
        "truncated-utf8-at-eol", b"data: \xe2\x82\ndata: y\n\n", [M(data="\ufffd\ny")]
    ),
    Case("overlong-utf8", b"data: \xc0\xaf\n\n", [M(data="\ufffd\ufffd")]),
    Case("surrogate-utf8", b"data: \xed\xa0\x80\n\n", [M(data="\ufffd\ufffd\ufffd")]),
    Case(
        "invalid-utf8-comment",
        b": \xff\n",
        [],
        comments=["\ufffd"],
    ),
    Case("nul-in-data", b"data: a\x00b\n\n", [M(data="a\x00b")]),
    # Unterminated events are never dispatched.
    Case("unterminated", b"data: x\n", []),
    Case("unterminated-no-eol", b"data: x", []),
    Case("unterminated-after-event", b"data: a\n\ndata: b\n", [M(data="a")]),
]


def run(chunks: Sequence[bytes]) -> tuple[list[MessageEvent], EventParser, list[str]]:
    comments: list[str] = []
    parser = EventParser(on_comment=comments.append)
    events: list[MessageEvent] = []
    for chunk in chunks:
        events.extend(parser.feed(chunk))
    return events, parser, comments


def check(case: Case, chunks: Sequence[bytes]) -> None:
    events, parser, comments = run(chunks)
    assert events == case.events, chunks
    assert parser.last_event_id == case.last_event_id, chunks
    assert parser.retry == case.retry, chunks
    assert comments == case.comments, chunks


def splits(wire: bytes, cuts: int) -> Iterator[list[bytes]]:
    for points in combinations(range(1, len(wire)), cuts):
        bounds = [0, *points, len(wire)]
        yield [wire[a:b] for a, b in pairwise(bounds)]


ids = [case.name for case in CASES]


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_whole(case: Case) -> None:
    check(case, [case.wire])


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_one_byte_at_a_time(case: Case) -> None:
    check(case, [case.wire[i : i + 1] for i in range(len(case.wire))])


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_every_split_point(case: Case) -> None:
    for chunks in splits(case.wire, 1):
        check(case, chunks)


@pytest.mark.parametrize(
    "case", [c for c in CASES if len(c.wire) <= 64], ids=lambda c: c.name
)
def test_every_pair_of_split_points(case: Case) -> None:
    for chunks in splits(case.wire, 2):
        check(case, chunks)


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_empty_chunks_change_nothing(case: Case) -> None:
    chunks = [b""]
    for i in range(len(case.wire)):
        chunks += [case.wire[i : i + 1], b""]
    check(case, chunks)


def test_events_come_out_as_soon_as_complete() -> None:
    parser = EventParser()
    assert parser.feed(b"data: a\n") == []
    assert parser.feed(b"\n") == [M(data="a")]
    # A CR ends the line at once: the event does not wait for a possible LF.
    assert parser.feed(b"data: b\r\r") == [M(data="b")]
    assert parser.feed(b"\n") == []  # the LF of the CRLF split above
    assert parser.feed(b"data: c\n\n") == [M(data="c")]


def test_lf_after_cr_only_skipped_right_after() -> None:
    parser = EventParser()
    assert parser.feed(b"data: a\r") == []
    assert parser.feed(b"") == []
    assert parser.feed(b"\n") == []  # still the CRLF
    assert parser.feed(b"\n") == [M(data="a")]


def test_bom_split_across_feeds() -> None:
    parser = EventParser()
    assert parser.feed(b"\xef") == []
    assert parser.feed(b"\xbb") == []
    assert parser.feed(b"\xbfdata: x\n\n") == [M(data="x")]


def test_bom_only_at_start_of_stream() -> None:
    parser = EventParser()
    assert parser.feed(b"data: a\n\n") == [M(data="a")]
    assert parser.feed(b"\xef\xbb\xbfdata: b\n\n") == []  # name is "\ufeffdata"


def test_close_discards_unterminated_event_and_keeps_state() -> None:
    parser = EventParser()
    assert parser.feed(
        b"retry: 50\nid: 1\ndata: a\n\nid: 2\nevent: e\ndata: lost\r"
    ) == [M(data="a", last_event_id="1", retry=50)]
    parser.close()
    assert parser.last_event_id == "1"
    assert parser.retry == 50
    # A new stream: its BOM is skipped, and nothing of the discarded block
    # (data, type, id) leaks into it.
    assert parser.feed(b"\xef\xbb\xbf\ndata: b\n\n") == [M(data="b", last_event_id="1")]


def test_close_on_a_fresh_parser() -> None:
    parser = EventParser()
    parser.close()
    assert parser.feed(b"data: x\n\n") == [M(data="x")]


def test_initial_last_event_id() -> None:
    parser = EventParser(last_event_id="41")
    assert parser.last_event_id == "41"
    assert parser.feed(b"data: a\n\nid: 42\ndata: b\n\n") == [
        M(data="a", last_event_id="41"),
        M(data="b", last_event_id="42"),
    ]


def test_defaults() -> None:
    parser = EventParser()
    assert parser.last_event_id == ""
    assert parser.retry is None
    assert MessageEvent() == MessageEvent("message", "", "", None)
    assert trio_sse.EventParser is EventParser
    assert trio_sse.MessageEvent is MessageEvent


def test_message_event_is_frozen_value() -> None:
    event = MessageEvent("t", "d", "1", 5)
    assert event == MessageEvent(type="t", data="d", last_event_id="1", retry=5)
    assert hash(event) == hash(MessageEvent("t", "d", "1", 5))
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        event.data = "x"  # type: ignore[misc]


def test_comments_ignored_without_hook() -> None:
    assert EventParser().feed(b": x\ndata: y\n\n") == [M(data="y")]


def test_comment_hook_sees_comments_in_order_with_events() -> None:
    log: list[object] = []
    parser = EventParser(on_comment=log.append)
    for event in parser.feed(b": a\ndata: 1\n\n: b\n"):
        log.append(event)
    # Comments are reported while feed() runs, events when it returns.
    assert log == ["a", "b", M(data="1")]


def test_comment_hook_exception_propagates() -> None:
    def boom(text: str) -> None:
        raise RuntimeError(text)

    parser = EventParser(on_comment=boom)
    with pytest.raises(RuntimeError, match="bad"):
        parser.feed(b": bad\n")


class TestMaxEventSize:
    def test_within_limit(self) -> None:
        # "data: 12\n" is 9 bytes: two such lines make 18.
        parser = EventParser(max_event_size=18)
        assert parser.feed(b"data: 12\ndata: 34\n\n" * 3) == [M(data="12\n34")] * 3

    def test_data_lines_add_up(self) -> None:
        parser = EventParser(max_event_size=17)
        with pytest.raises(ParseError, match="max_event_size=17"):
            parser.feed(b"data: 12\ndata: 34\n\n")

    def test_one_long_line(self) -> None:
        parser = EventParser(max_event_size=10)
        with pytest.raises(ParseError):
            parser.feed(b"id: 1234567\n")

    def test_unterminated_line(self) -> None:
        parser = EventParser(max_event_size=10)
        assert parser.feed(b"data: 123") == []
        assert parser.feed(b"4") == []  # 10 bytes held
        with pytest.raises(ParseError):
            parser.feed(b"5")

    def test_line_being_read_and_data_held_are_bounded_apart(self) -> None:
        parser = EventParser(max_event_size=12)
        assert parser.feed(b"data: 1\nid: 1234") == []  # 8 held, 10 being read
        assert parser.feed(b"5\n") == []  # a whole 12-byte id line
        assert parser.feed(b"data: 2") == []  # 8 + 7 bytes, each within
        with pytest.raises(ParseError):
            parser.feed(b"\n")  # 8 + 8 bytes of data

    def test_unterminated_line_of_exactly_the_limit(self) -> None:
        parser = EventParser(max_event_size=10)
        assert parser.feed(b"data: 1234") == []
        with pytest.raises(ParseError):
            parser.feed(b"\n")  # 11 bytes with its line end

    def test_comments_and_blank_blocks_never_add_up(self) -> None:
        parser = EventParser(max_event_size=8)
        for _ in range(1000):
            assert parser.feed(b":\n: ka\nid: 1\n\n") == []
        assert parser.feed(b"data: 1\n\n") == [M(data="1", last_event_id="1")]

    def test_limit_resets_at_each_event(self) -> None:
        parser = EventParser(max_event_size=8)
        for _ in range(100):
            assert parser.feed(b"data: 1\n\n") == [M(data="1")]

    def test_parser_unusable_after_error(self) -> None:
        parser = EventParser(max_event_size=4)
        with pytest.raises(ParseError):
            parser.feed(b"data: toolong\n\n")
        with pytest.raises(ParseError, match="failed earlier"):
            parser.feed(b"\n")

    def test_error_family(self) -> None:
        assert issubclass(ParseError, SseError)
        assert issubclass(ParseError, ValueError)
