"""Event: validation at construction, encoding, copies and comments."""

from __future__ import annotations

import datetime
import math
import pickle
from typing import Any

import attrs
import pytest

import trio_sse
from trio_sse import Event, InvalidEvent, _event, comment

# (event, exact bytes on the wire)
ENCODINGS: list[tuple[Event, bytes]] = [
    (Event("hello"), b"data: hello\n\n"),
    (Event(""), b"data: \n\n"),
    (Event(), b"\n"),
    (Event("a\nb"), b"data: a\ndata: b\n\n"),
    (Event("a\r\nb"), b"data: a\ndata: b\n\n"),
    (Event("a\rb"), b"data: a\ndata: b\n\n"),
    (Event("a\r\rb"), b"data: a\ndata: \ndata: b\n\n"),
    (Event("a\n\r\nb"), b"data: a\ndata: \ndata: b\n\n"),
    (Event("\n"), b"data: \ndata: \n\n"),
    (Event("end\n"), b"data: end\ndata: \n\n"),
    (Event(" lead"), b"data:  lead\n\n"),
    (
        Event("a\u2028b\x85c\x0bd\x0ce\x1cf"),
        "data: a\u2028b\x85c\x0bd\x0ce\x1cf\n\n".encode(),
    ),
    (Event("caf\u00e9 \U0001f600"), "data: caf\u00e9 \U0001f600\n\n".encode()),
    (Event("nul\0ok"), b"data: nul\0ok\n\n"),
    (Event(id="42"), b"id: 42\n\n"),
    (Event(id=""), b"id: \n\n"),
    (Event(event="tick"), b"event: tick\n\n"),
    (Event(retry=1.5), b"retry: 1500\n\n"),
    (Event(comment="hi"), b": hi\n\n"),
    (Event(comment=""), b":\n\n"),
    (Event(comment="a\r\nb\rc\n"), b": a\n: b\n: c\n:\n\n"),
    (
        Event("x", id="7", event="up", retry=2, comment="note"),
        b": note\nid: 7\nevent: up\nretry: 2000\ndata: x\n\n",
    ),
]


@pytest.mark.parametrize(("event", "wire"), ENCODINGS)
def test_encode(event: Event, wire: bytes) -> None:
    assert event.encode() == wire


def test_encode_is_cached_and_computed_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Event] = []
    real = _event._encode

    def counting(event: Event) -> bytes:
        calls.append(event)
        return real(event)

    monkeypatch.setattr(_event, "_encode", counting)
    event = Event("x", id="1")
    assert calls == []  # lazy: nothing encoded at construction
    first = event.encode()
    assert event.encode() is first
    assert event.encode() is first
    assert calls == [event]
    # A copy is a new event, encoded on its own.
    copy = event.with_id("2")
    assert copy.encode() == b"id: 2\ndata: x\n\n"
    assert len(calls) == 2


def test_cache_does_not_affect_equality_hash_or_repr() -> None:
    a, b = Event("x", id="1"), Event("x", id="1")
    a.encode()
    assert a == b
    assert hash(a) == hash(b)
    assert (
        repr(a)
        == repr(b)
        == "Event(data='x', id='1', event=None, retry=None, comment=None)"
    )
    assert Event("x") != Event("y")


def test_frozen() -> None:
    event = Event("x")
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        event.data = "y"  # type: ignore[misc]
    assert not hasattr(event, "__dict__")


def test_pickle_round_trip() -> None:
    event = Event("x", id="1", retry=datetime.timedelta(seconds=3))
    event.encode()
    again = pickle.loads(pickle.dumps(event))
    assert again == event
    assert again.encode() == event.encode()


def test_positional_only_data() -> None:
    with pytest.raises(TypeError):
        Event("x", "1")  # type: ignore[call-arg]


def test_public_names() -> None:
    assert trio_sse.Event is Event
    assert trio_sse.comment is comment
    assert issubclass(InvalidEvent, ValueError)


# (field, value, message fragment): every rejected character, by field.
REJECTED: list[tuple[str, str, str]] = [
    ("id", "a\nb", r"Event id may not contain '\n' (LF)"),
    ("id", "a\rb", r"Event id may not contain '\r' (CR)"),
    ("id", "a\r\nb", r"Event id may not contain '\n' (LF)"),
    ("id", "a\0b", r"Event id may not contain '\x00' (NUL)"),
    ("id", "\n", r"Event id may not contain '\n' (LF)"),
    ("event", "a\nb", r"Event event may not contain '\n' (LF)"),
    ("event", "a\rb", r"Event event may not contain '\r' (CR)"),
    ("event", "\r", r"Event event may not contain '\r' (CR)"),
]


@pytest.mark.parametrize(("field", "value", "message"), REJECTED)
def test_rejected_characters(field: str, value: str, message: str) -> None:
    fields: dict[str, Any] = {field: value}
    with pytest.raises(InvalidEvent) as info:
        Event("x", **fields)
    assert str(info.value) == message


def test_nul_allowed_in_event_type_and_data() -> None:
    assert Event("a\0", event="b\0").encode() == b"event: b\0\ndata: a\0\n\n"


@pytest.mark.parametrize("field", ["data", "id", "event", "comment"])
@pytest.mark.parametrize("value", ["\ud800", "ok\udfffok"])
def test_lone_surrogate_rejected(field: str, value: str) -> None:
    fields: dict[str, Any] = {field: value}
    with pytest.raises(
        InvalidEvent, match=f"Event {field} may not contain .*surrogate"
    ):
        Event(**fields)


@pytest.mark.parametrize("field", ["data", "id", "event", "comment"])
@pytest.mark.parametrize("value", [b"bytes", 1, 1.0, ["x"]])
def test_non_str_rejected(field: str, value: object) -> None:
    fields: dict[str, Any] = {field: value}
    with pytest.raises(InvalidEvent) as info:
        Event(**fields)
    name = type(value).__name__
    assert str(info.value) == f"Event {field} must be str or None, not {name}"


# (retry, milliseconds written)
RETRIES: list[tuple[Any, int]] = [
    (0, 0),
    (0.0, 0),
    (-0.0, 0),
    (1, 1000),
    (2.5, 2500),
    (0.0004, 0),
    (0.0006, 1),
    (0.1234, 123),
    (0.1236, 124),
    (3600, 3_600_000),
    (datetime.timedelta(0), 0),
    (datetime.timedelta(seconds=3), 3000),
    (datetime.timedelta(microseconds=499), 0),
    (datetime.timedelta(microseconds=500), 1),
    (datetime.timedelta(milliseconds=1, microseconds=499), 1),
    (datetime.timedelta(days=1), 86_400_000),
]


@pytest.mark.parametrize(("retry", "ms"), RETRIES)
def test_retry_nearest_millisecond(retry: Any, ms: int) -> None:
    assert Event(retry=retry).encode() == f"retry: {ms}\n\n".encode()


@pytest.mark.parametrize(
    ("retry", "message"),
    [
        (-1, "Event retry must be >= 0 seconds, got -1"),
        (-0.001, "Event retry must be >= 0 seconds, got -0.001"),
        (
            datetime.timedelta(microseconds=-1),
            "Event retry must be >= 0 seconds, got datetime.timedelta(days=-1, "
            "seconds=86399, microseconds=999999)",
        ),
        (math.inf, "Event retry must be finite, got inf"),
        (-math.inf, "Event retry must be finite, got -inf"),
        (math.nan, "Event retry must be finite, got nan"),
        (1e300, "Event retry is too large, got 1e+300"),
        (2**80, f"Event retry is too large, got {2**80}"),
        (
            True,
            "Event retry must be a number of seconds or a datetime.timedelta, not bool",
        ),
        (
            "5",
            "Event retry must be a number of seconds or a datetime.timedelta, not str",
        ),
    ],
)
def test_retry_rejected(retry: Any, message: str) -> None:
    with pytest.raises(InvalidEvent) as info:
        Event(retry=retry)
    assert str(info.value) == message


def test_largest_retry() -> None:
    assert Event(retry=10**16).encode() == f"retry: {10**19}\n\n".encode()
    assert (
        Event(retry=datetime.timedelta.max).encode() == b"retry: 86400000000000000\n\n"
    )
    with pytest.raises(InvalidEvent, match="Event retry is too large"):
        Event(retry=_event.MAX_RETRY_MS // 1000 + 1)


def test_json() -> None:
    event = Event.json({"b": [1, 2.5, None], "a": "caf\u00e9\n"}, id="1", event="j")
    assert event.data == '{"b":[1,2.5,null],"a":"caf\u00e9\\n"}'
    assert event.id == "1"
    assert event.event == "j"
    assert event.encode() == (
        'id: 1\nevent: j\ndata: {"b":[1,2.5,null],"a":"caf\u00e9\\n"}\n\n'.encode()
    )


def test_json_rejects_nan_and_bad_fields() -> None:
    with pytest.raises(InvalidEvent, match="Event data is not JSON"):
        Event.json({"x": math.nan})
    with pytest.raises(TypeError):
        Event.json(object())
    with pytest.raises(InvalidEvent, match="Event id may not contain"):
        Event.json(1, id="\n")
    with pytest.raises(InvalidEvent, match="surrogate"):
        Event.json("\ud800")


def test_html() -> None:
    event = Event.html('<div id="x">\n  <p>hi</p>\n</div>', event="swap")
    assert event.encode() == (
        b'event: swap\ndata: <div id="x">\ndata:   <p>hi</p>\ndata: </div>\n\n'
    )

    class Markup(str):
        pass

    plain = Event.html(Markup("<b>x</b>"))
    assert type(plain.data) is str
    with pytest.raises(InvalidEvent, match="not bytes"):
        Event.html(b"<b>")  # type: ignore[arg-type]


def test_copies() -> None:
    base = Event("x", id="1", event="e", retry=1, comment="c")
    assert base.with_id("2") == Event("x", id="2", event="e", retry=1, comment="c")
    assert base.with_id(None).id is None
    assert base.with_event("f") == Event("x", id="1", event="f", retry=1, comment="c")
    assert base.with_retry(2) == Event("x", id="1", event="e", retry=2, comment="c")
    assert base.with_retry(None).retry is None
    assert base.id == "1"  # the original is unchanged
    with pytest.raises(InvalidEvent, match=r"Event id may not contain '\\r' \(CR\)"):
        base.with_id("\r")
    with pytest.raises(InvalidEvent, match=r"Event event may not contain '\\n' \(LF\)"):
        base.with_event("\n")
    with pytest.raises(InvalidEvent, match="Event retry must be >= 0"):
        base.with_retry(-1)


def test_str_subclasses_stored_as_plain_str() -> None:
    class Shouty(str):
        def replace(self, *args: object, **kwargs: object) -> str:
            return "HIJACKED"

        def __format__(self, spec: str) -> str:
            return "HIJACKED"

    event = Event(
        Shouty("a\nb"),
        id=Shouty("\u00e91"),
        event=Shouty("e"),
        comment=Shouty("c"),
    )
    assert [type(v) for v in (event.data, event.id, event.event, event.comment)] == [
        str
    ] * 4
    assert event == Event("a\nb", id="\u00e91", event="e", comment="c")
    assert event.encode() == ": c\nid: \u00e91\nevent: e\ndata: a\ndata: b\n\n".encode()
    assert comment(Shouty("x")) == b": x\n"


def test_copy_of_subclass_keeps_class() -> None:
    class Tagged(Event):
        pass

    assert type(Tagged("x").with_id("1")) is Tagged


@pytest.mark.parametrize(
    ("text", "wire"),
    [
        ("", b":\n"),
        ("ka", b": ka\n"),
        (" x", b":  x\n"),
        ("a\nb", b": a\n: b\n"),
        ("a\r\nb\r", b": a\n: b\n:\n"),
        ("\u00e9", ": \u00e9\n".encode()),
    ],
)
def test_comment(text: str, wire: bytes) -> None:
    assert comment(text) == wire


def test_comment_default_is_cheapest_keep_alive() -> None:
    assert comment() == b":\n"


def test_comment_rejects() -> None:
    with pytest.raises(
        InvalidEvent, match="Event comment must be str or None, not int"
    ):
        comment(1)  # type: ignore[arg-type]
    with pytest.raises(InvalidEvent, match="surrogate"):
        comment("\udc00")
