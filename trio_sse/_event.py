"""Outgoing events: validated once at construction, encoded once (sans-IO).

Nothing here does I/O. An :class:`Event` checks every field when it is built,
so writing it can never fail; :meth:`Event.encode` turns it into the bytes of
one ``text/event-stream`` block, computed on first use and cached on the
object, so an event broadcast to many subscribers is encoded once.
"""

from __future__ import annotations

import datetime
import json
import math
import re
from typing import Any

import attrs

from ._errors import InvalidEvent

__all__ = ["Event", "comment", "encode_item", "encoded_size"]

#: The largest ``retry`` a reader accepts: an unsigned 64-bit count of ms.
MAX_RETRY_MS = 2**64 - 1

# CR and CRLF, normalised to LF before splitting data and comments into lines.
_CR_OR_CRLF = re.compile(r"\r\n?")
# Lone surrogates cannot be encoded as UTF-8.
_SURROGATE = re.compile(r"[\ud800-\udfff]")

# Compact JSON for Event.json (an encoder holds only its settings).
_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)

_CHAR_NAMES = {"\n": "LF", "\r": "CR", "\0": "NUL"}


def _forbid(field: str, value: str, chars: str) -> None:
    for char in chars:
        if char in value:
            raise InvalidEvent(
                f"Event {field} may not contain {char!r} ({_CHAR_NAMES[char]})"
            )


def _check_text(field: str, value: object) -> str:
    # Returns the value as a plain str (a str subclass such as an HTML-safe
    # string type could change how the value is written).
    if not isinstance(value, str):
        raise InvalidEvent(
            f"Event {field} must be str or None, not {type(value).__name__}"
        )
    if not value.isascii():
        match = _SURROGATE.search(value)
        if match is not None:
            raise InvalidEvent(
                f"Event {field} may not contain {match.group()!r}"
                " (a lone surrogate, which UTF-8 cannot encode)"
            )
    return value if type(value) is str else str.__str__(value)


def retry_ms(retry: object) -> int:
    """Return ``retry`` (seconds or :class:`datetime.timedelta`) in whole ms.

    Rounds to the nearest millisecond. Raises :class:`~trio_sse.InvalidEvent`
    for a negative, infinite, NaN or too large value, or a value of another type.
    """
    if isinstance(retry, datetime.timedelta):
        if retry < datetime.timedelta(0):
            raise InvalidEvent(f"Event retry must be >= 0 seconds, got {retry!r}")
        micros = (retry.days * 86_400 + retry.seconds) * 1_000_000 + retry.microseconds
        ms = (micros + 500) // 1000
    elif isinstance(retry, (int, float)) and not isinstance(retry, bool):
        if not math.isfinite(retry):
            raise InvalidEvent(f"Event retry must be finite, got {retry!r}")
        if retry < 0:
            raise InvalidEvent(f"Event retry must be >= 0 seconds, got {retry!r}")
        if retry > MAX_RETRY_MS / 1000:
            raise InvalidEvent(f"Event retry is too large, got {retry!r}")
        ms = round(retry * 1000)
    else:
        raise InvalidEvent(
            "Event retry must be a number of seconds or a datetime.timedelta,"
            f" not {type(retry).__name__}"
        )
    if ms > MAX_RETRY_MS:
        raise InvalidEvent(f"Event retry is too large, got {retry!r}")
    return ms


def _lines(text: str) -> list[str]:
    # Split on CR, LF and CRLF only (str.splitlines also splits on U+2028 etc.).
    if "\r" in text:
        text = _CR_OR_CRLF.sub("\n", text)
    return text.split("\n")


def _comment_text(text: str) -> str:
    return "".join(f": {line}\n" if line else ":\n" for line in _lines(text))


@attrs.frozen
class Event:
    """One server-sent event: immutable, validated at construction.

    Every field is optional. ``data`` may span lines (CR, LF or CRLF); each
    becomes its own ``data:`` line, and the reader joins them with LF.
    ``Event(data="")`` dispatches an empty message; ``data=None`` sends no
    ``data`` field, so a browser dispatches nothing (useful with ``id``,
    ``retry`` or ``comment`` alone). An event with no field at all encodes to
    a bare blank line, which dispatches nothing.

    :param data: the message text.
    :param id: the event id, which the reader sends back as ``Last-Event-ID``
        when it reconnects; ``""`` resets it. May not contain CR, LF or NUL.
    :param event: the event type (the reader's default is ``"message"``).
        May not contain CR or LF.
    :param retry: the reconnection delay to ask of the reader, in seconds
        (``int``, ``float`` or :class:`datetime.timedelta`), finite and
        ``>= 0``; written as the nearest whole millisecond.
    :param comment: text sent as comment lines (one per line of the text),
        which readers ignore.
    :raises InvalidEvent: for a forbidden character (the message names the
        field and the character), a non-``str`` text field, a lone surrogate
        (not encodable as UTF-8) or a bad ``retry``. :class:`InvalidEvent` is
        a :class:`ValueError`.
    """

    data: str | None = None
    id: str | None = attrs.field(default=None, kw_only=True)
    event: str | None = attrs.field(default=None, kw_only=True)
    retry: float | datetime.timedelta | None = attrs.field(default=None, kw_only=True)
    comment: str | None = attrs.field(default=None, kw_only=True)
    # The encoded bytes, filled in by the first encode().
    _encoded: bytes | None = attrs.field(
        default=None, init=False, repr=False, eq=False, hash=False
    )

    def __attrs_post_init__(self) -> None:
        # Fast paths first: this runs for every event a program sends.
        data, id, event = self.data, self.id, self.event
        if data is not None and not (type(data) is str and data.isascii()):
            object.__setattr__(self, "data", _check_text("data", data))
        if id is not None:
            if not (type(id) is str and id.isascii()):
                id = _check_text("id", id)
                object.__setattr__(self, "id", id)
            if "\n" in id or "\r" in id or "\0" in id:
                _forbid("id", id, "\n\r\0")
        if event is not None:
            if not (type(event) is str and event.isascii()):
                event = _check_text("event", event)
                object.__setattr__(self, "event", event)
            if "\n" in event or "\r" in event:
                _forbid("event", event, "\n\r")
        if self.retry is not None:
            retry_ms(self.retry)
        if self.comment is not None:
            object.__setattr__(self, "comment", _check_text("comment", self.comment))

    @classmethod
    def json(cls, obj: Any, **fields: Any) -> Event:
        """Return an event whose data is ``obj`` as compact JSON.

        Uses ``separators=(",", ":")`` and ``ensure_ascii=False``, so the data
        is a single line. ``fields`` are the other keyword fields of
        :class:`Event`. A ``NaN`` or infinite float raises
        :class:`~trio_sse.InvalidEvent` (it is not JSON); an object
        :mod:`json` cannot serialise raises :class:`TypeError`.
        """
        try:
            data = _JSON.encode(obj)
        except ValueError as exc:
            raise InvalidEvent(f"Event data is not JSON: {exc}") from exc
        return cls(data, **fields)

    @classmethod
    def html(cls, fragment: str, **fields: Any) -> Event:
        """Return an event carrying an HTML fragment (for example an HTMX swap).

        Each line of the fragment becomes a ``data:`` line; the reader joins
        them with LF, so the fragment arrives unchanged (line ends become
        LF). Name the swap target with ``event=...``. ``fields`` are the other
        keyword fields of :class:`Event`.
        """
        if not isinstance(fragment, str):
            raise InvalidEvent(
                f"Event data must be str or None, not {type(fragment).__name__}"
            )
        return cls(str(fragment), **fields)

    def with_id(self, id: str | None) -> Event:
        """Return a copy with ``id`` replaced (validated again)."""
        return attrs.evolve(self, id=id)

    def with_event(self, name: str | None) -> Event:
        """Return a copy with the event type replaced (validated again)."""
        return attrs.evolve(self, event=name)

    def with_retry(self, seconds: float | datetime.timedelta | None) -> Event:
        """Return a copy with ``retry`` replaced (validated again)."""
        return attrs.evolve(self, retry=seconds)

    def encode(self) -> bytes:
        """Return the event as UTF-8 bytes, ending with a blank line.

        Fields are written as ``name: value`` lines in the order comment, id,
        event, retry, data. The result is computed on the first call and
        cached on the event.
        """
        encoded = self._encoded
        if encoded is None:
            encoded = _encode(self)
            object.__setattr__(self, "_encoded", encoded)
        return encoded


def _encode(event: Event) -> bytes:
    # Called exactly once per Event object by Event.encode(); tests count calls.
    parts: list[str] = []
    if event.comment is not None:
        parts.append(_comment_text(event.comment))
    if event.id is not None:
        parts.append(f"id: {event.id}\n")
    if event.event is not None:
        parts.append(f"event: {event.event}\n")
    if event.retry is not None:
        parts.append(f"retry: {retry_ms(event.retry)}\n")
    data = event.data
    if data is not None:
        if "\r" in data:
            data = _CR_OR_CRLF.sub("\n", data)
        parts.append("data: " + data.replace("\n", "\ndata: ") + "\n")
    parts.append("\n")
    return "".join(parts).encode()


def comment(text: str = "") -> bytes:
    """Return ``text`` as comment lines, for example a keep-alive.

    Each line of ``text`` (split on CR, LF and CRLF) becomes one ``: line``;
    an empty line is a bare ``:``, so ``comment()`` is ``b":\\n"``. No blank
    line follows: a comment dispatches nothing and may be written between any
    two events.

    :raises InvalidEvent: if ``text`` is not a ``str`` or holds a lone surrogate.
    """
    return _comment_text(_check_text("comment", text)).encode()


# Any line end: what a reader splits an event stream on.
_LINE_END = re.compile(rb"\r\n|\r|\n")


def complete_block(data: bytes) -> bool:
    """Whether ``data`` leaves a reader between two events.

    True when every field line is followed by a blank line, so that whatever
    is written next cannot join the last event: event blocks, comment lines
    (which may stand between events) and blank lines, each line terminated.
    """
    if data.endswith(b"\n\n"):
        return True
    lines = _LINE_END.split(data)
    if lines[-1]:
        return False  # the last line is unterminated
    for line in reversed(lines[:-1]):
        if not line:
            return True
        if not line.startswith(b":"):
            return False
    return True


def encode_item(item: object) -> bytes:
    """Return the wire bytes of one stream item: an Event, ``str`` or bytes.

    ``str`` is sent as ``Event(data=item)``; bytes must hold complete event
    blocks (see :func:`complete_block`). The one place where a stream's
    items become bytes.

    :raises TypeError: for any other object.
    :raises InvalidEvent: for bytes that do not end between two events.
    """
    if isinstance(item, Event):
        return item.encode()
    if isinstance(item, str):
        return Event(item).encode()
    if isinstance(item, (bytes, bytearray, memoryview)):
        data = bytes(item)
        if not complete_block(data):
            raise InvalidEvent(
                "a bytes item must hold complete event blocks ending with a "
                f"blank line, got {data[-40:]!r} at its end"
            )
        return data
    raise TypeError(
        "an SSE stream must yield Event, str or bytes objects,"
        f" not {type(item).__name__} ({item!r:.60})"
    )


def encoded_size(item: object, limit: int) -> int | None:
    """The size of ``item`` on the wire, counted without encoding it.

    ``item`` is what :func:`encode_item` takes: an :class:`Event`, ``str``
    data or bytes; any other object gives ``None``. Data is counted exactly
    (each line's ``data:`` prefix included); the other fields of an Event
    add their length and the field's name. Text longer than ``limit`` is not
    counted line by line: its size is then only known to be over ``limit``.
    """
    if isinstance(item, Event):
        encoded = item._encoded
        if encoded is not None:
            return len(encoded)
        size = _data_size(item.data, limit)
        if item.id is not None:
            size += len(item.id) + 10
        if item.event is not None:
            size += len(item.event) + 10
        if item.comment is not None:
            size += len(item.comment) + 10
        return size
    if isinstance(item, str):
        return _data_size(item, limit)
    if isinstance(item, (bytes, bytearray, memoryview)):
        return len(item)
    return None


def _data_size(data: str | None, limit: int) -> int:
    """The encoded size of the ``data:`` lines of ``data`` (its length alone
    when that is over ``limit``)."""
    if data is None:
        return 1
    if len(data) > limit:
        return len(data)
    lf = data.count("\n")
    cr = data.count("\r")
    lines = lf + cr - (data.count("\r\n") if cr else 0) + 1
    size = len(data) if data.isascii() else len(data.encode("utf-8"))
    return size - lf - cr + 7 * lines + 1
