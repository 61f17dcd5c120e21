"""Incoming events: the WHATWG event-stream parser (sans-IO).

:class:`EventParser` implements "interpreting an event stream" from the HTML
standard: bytes in, :class:`MessageEvent` values out, no I/O. Feed it chunks
as they arrive, split anywhere.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import attrs

from ._errors import SseError

__all__ = ["EventParser", "MessageEvent", "ParseError"]

_BOM = b"\xef\xbb\xbf"
_LINE_END = re.compile(rb"\r\n|\r|\n")
# The largest ``retry`` accepted: an unsigned 64-bit count of milliseconds.
_MAX_RETRY = 2**64 - 1


def _split_lf(data: bytes) -> list[bytes]:
    return data.split(b"\n")


class ParseError(SseError, ValueError):
    """An event stream cannot be parsed within the parser's limits."""


@attrs.frozen
class MessageEvent:
    """One event dispatched by :class:`EventParser`.

    :param type: the event type, ``"message"`` unless an ``event:`` field
        named another.
    :param data: the ``data:`` lines of the event, joined with LF.
    :param last_event_id: the stream's last event id when the event was
        dispatched (ids persist from one event to the next).
    :param retry: the ``retry:`` value (milliseconds) given in this event's
        block, if any; the parser's :attr:`EventParser.retry` keeps the value
        in force.
    """

    type: str = "message"
    data: str = ""
    last_event_id: str = ""
    retry: int | None = None


class EventParser:
    """Parse a ``text/event-stream`` byte stream into :class:`MessageEvent` values.

    Follows the HTML standard's algorithm: one leading UTF-8 BOM is skipped;
    lines end with CR, LF or CRLF (also when split between two chunks);
    invalid UTF-8 becomes U+FFFD; a line without a colon is a field with an
    empty value; one space after the colon is dropped; unknown fields are
    ignored; an ``id`` containing NUL is ignored; a ``retry`` that is not all
    ASCII digits (or is empty, or does not fit in 64 bits) is ignored; a block
    without ``data`` is not dispatched, but its blank line still commits the
    last event id.

    :param last_event_id: the id already known (for example from a previous
        connection); events without an ``id`` field carry it.
    :param on_comment: called with the text of each comment line (the part
        after ``:``, without one leading space), in stream order, while
        :meth:`feed` runs. Comments are otherwise ignored.
    :param max_event_size: a bound, in bytes, on what the parser holds: no
        line (each counted with its line end) may be longer, and the
        ``data:`` lines of one event may not add up to more. ``None``, the
        default, means no limit. Beyond it :meth:`feed` raises
        :exc:`~trio_sse.ParseError`, whichever way the stream is split.
        Comments and other fields do not add up, so keep-alives never reach
        the limit.
    """

    def __init__(
        self,
        *,
        last_event_id: str = "",
        on_comment: Callable[[str], None] | None = None,
        max_event_size: int | None = None,
    ) -> None:
        #: The stream's last event id, set by each blank line that ends a
        #: block to the latest valid ``id`` seen (even if the block
        #: dispatched nothing).
        self.last_event_id: str = last_event_id
        #: The reconnection time in milliseconds from the latest valid
        #: ``retry`` field, or ``None`` if there was none.
        self.retry: int | None = None
        self._on_comment = on_comment
        self._max = max_event_size
        self._broken = False
        self._id_buffer = last_event_id
        self._start_stream()

    def _start_stream(self) -> None:
        self._head: bytes | None = b""  # bytes held back to look for a BOM
        self._skip_lf = False  # the last chunk ended with CR
        self._pending: list[bytes] = []  # the unterminated line
        self._pending_size = 0
        self._block_size = 0  # bytes of the data lines held (with a limit)
        self._data: list[bytes] = []
        self._event_type = b""
        self._block_retry: int | None = None

    def feed(self, data: bytes) -> list[MessageEvent]:
        """Parse the next chunk of the stream; return the events it completes.

        :raises ParseError: if an event block exceeds ``max_event_size``;
            the parser cannot be used after that.
        """
        if self._broken:
            raise ParseError("the parser failed earlier and cannot be fed again")
        if self._head is not None:
            head = self._head + data
            if len(head) < 3 and _BOM.startswith(head):
                self._head = head
                return []
            self._head = None
            data = head[3:] if head.startswith(_BOM) else head
        if self._skip_lf and data:
            self._skip_lf = False
            if data[0] == 0x0A:
                data = data[1:]
        end = max(data.rfind(b"\n"), data.rfind(b"\r")) + 1
        if not end:
            if data:
                self._pending.append(data)
                self._pending_size += len(data)
                self._check_size(self._pending_size)
            return []
        complete, rest = data[:end], data[end:]
        if self._pending:
            self._pending.append(complete)
            complete = b"".join(self._pending)
            self._pending.clear()
        self._skip_lf = not rest and complete[-1] == 0x0D
        if rest:
            self._pending.append(rest)
        self._pending_size = len(rest)
        # Split on LF alone when there is no CR: the common, faster case.
        split = _LINE_END.split if 0x0D in complete else _split_lf
        lines = split(complete)
        lines.pop()  # the empty text after the last line end
        events: list[MessageEvent] = []
        self._process(lines, events)
        self._check_size(self._pending_size)
        return events

    def close(self) -> None:
        """End the stream: discard an unterminated event, if any.

        ``last_event_id`` and ``retry`` are kept; the parser may then be fed
        the next stream (a reconnection), whose own leading BOM is skipped.
        """
        self._id_buffer = self.last_event_id
        self._start_stream()

    def _check_size(self, size: int) -> None:
        if self._max is not None and size > self._max:
            self._broken = True
            raise ParseError(
                f"event block larger than max_event_size={self._max} bytes"
            )

    def _process(self, lines: list[bytes], events: list[MessageEvent]) -> None:
        limit = self._max
        for line in lines:
            if not line:
                self._dispatch(events)
                continue
            if limit is not None and len(line) + 1 > limit:
                self._check_size(len(line) + 1)
            if line[0] == 0x3A:  # ":"
                if self._on_comment is not None:
                    text = line[2:] if line[1:2] == b" " else line[1:]
                    self._on_comment(text.decode("utf-8", "replace"))
                continue
            name, _, value = line.partition(b":")
            if value[:1] == b" ":
                value = value[1:]
            if name == b"data":
                self._data.append(value)
                if limit is not None:
                    self._block_size += len(line) + 1
                    self._check_size(self._block_size)
            elif name == b"event":
                self._event_type = value
            elif name == b"id":
                if 0 not in value:
                    self._id_buffer = value.decode("utf-8", "replace")
            elif name == b"retry" and value.isdigit():
                digits = value.lstrip(b"0")
                if len(digits) <= 20:
                    ms = int(digits or b"0")
                    if ms <= _MAX_RETRY:
                        self.retry = self._block_retry = ms

    def _dispatch(self, events: list[MessageEvent]) -> None:
        self.last_event_id = self._id_buffer
        if self._data:
            events.append(
                MessageEvent(
                    self._event_type.decode("utf-8", "replace")
                    if self._event_type
                    else "message",
                    b"\n".join(self._data).decode("utf-8", "replace"),
                    self.last_event_id,
                    self._block_retry,
                )
            )
            self._data = []
        self._block_size = 0
        self._event_type = b""
        self._block_retry = None
