"""What the transports share about ASGI: types, headers, ``Last-Event-ID``.

The ASGI message and scope types are Hypercorn's (:mod:`hypercorn.typing`),
so there is one home for them. Nothing here does I/O.
"""

from __future__ import annotations

import logging
import urllib.parse
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

import trio
from hypercorn.typing import (
    ASGIReceiveCallable,
    ASGIReceiveEvent,
    ASGISendCallable,
    ASGISendEvent,
)

from ._shutdown import SHUTDOWN_SCOPE_KEY, ShutdownSignal

__all__ = [
    "BODY_WRITER_SCOPE_KEY",
    "BodyWriter",
    "Headers",
    "Receive",
    "ReceiveEvent",
    "Scope",
    "Send",
    "SendEvent",
    "build_headers",
    "last_event_id",
    "shutdown_of",
]

logger = logging.getLogger("trio_sse")

#: An ASGI scope as an application sees it (a mapping; servers add keys).
Scope = Mapping[str, Any]
Receive = ASGIReceiveCallable
Send = ASGISendCallable
ReceiveEvent = ASGIReceiveEvent
SendEvent = ASGISendEvent
#: Extra response headers: a mapping or ``(name, value)`` pairs.
Headers = Mapping[str, str] | Iterable[tuple[str | bytes, str | bytes]]

#: Scope key under which :func:`trio_sse.serve` offers a :class:`BodyWriter`
#: for an HTTP/1.1 request.
BODY_WRITER_SCOPE_KEY = "trio_sse.body_writer"


class BodyWriter(Protocol):
    """Writes a response body's bytes to the client without ASGI's ``send``.

    A server that frames the body itself (:func:`trio_sse.serve` on
    HTTP/1.1) offers one in the scope; the response still starts and ends
    through ``send``.
    """

    def usable(self) -> bool:
        """Whether a write now would be part of the response body."""
        ...

    async def write(self, data: bytes) -> bool:
        """Write *data*; raise :exc:`trio.BrokenResourceError` (or another
        :exc:`OSError`-like error) if the client is gone.

        Returns whether the write was a checkpoint: one that the kernel
        takes at once need not be (the caller then checkpoints itself).
        """
        ...


# Longest Last-Event-ID value accepted, in UTF-8 bytes.
_MAX_ID_BYTES = 256

SSE_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
)


def _header_bytes(value: str | bytes, what: str) -> bytes:
    raw = value.encode("latin-1") if isinstance(value, str) else bytes(value)
    if b"\r" in raw or b"\n" in raw or b"\0" in raw:
        raise ValueError(f"response header {what} may not contain CR, LF or NUL")
    return raw


def build_headers(
    headers: Headers | None,
    defaults: Iterable[tuple[bytes, bytes]] = SSE_HEADERS,
) -> list[tuple[bytes, bytes]]:
    """Return ``defaults`` with ``headers`` added; a name given replaces its default.

    :raises ValueError: for a name or value containing CR, LF or NUL.
    """
    extra: list[tuple[bytes, bytes]] = []
    if headers is not None:
        pairs = headers.items() if isinstance(headers, Mapping) else headers
        for name, value in pairs:
            raw_name = _header_bytes(name, "name").lower()
            extra.append((raw_name, _header_bytes(value, f"{raw_name!r}")))
    overridden = {name for name, _ in extra}
    merged = [pair for pair in defaults if pair[0] not in overridden]
    merged.extend(extra)
    return merged


def shutdown_of(scope: Scope) -> ShutdownSignal | trio.Event | None:
    """The server's shutdown signal in ``scope``, if it put one there.

    :func:`~trio_sse.serve` puts a :class:`~trio_sse.ShutdownSignal`; a plain
    :class:`trio.Event` works too. Anything else is ignored.
    """
    signal = scope.get(SHUTDOWN_SCOPE_KEY)
    if isinstance(signal, (ShutdownSignal, trio.Event)):
        return signal
    return None


def _valid_id(value: str, source: str) -> str | None:
    if not value:
        return None
    if (
        "\r" in value
        or "\n" in value
        or "\0" in value
        or len(value.encode("utf-8", "surrogatepass")) > _MAX_ID_BYTES
    ):
        logger.debug("ignoring malformed last event id from %s: %r", source, value)
        return None
    return value


def _from_scope(scope: Mapping[str, Any]) -> str | None:
    for name, raw in scope.get("headers") or ():
        if bytes(name).lower() == b"last-event-id":
            try:
                value = bytes(raw).decode("utf-8")
            except UnicodeDecodeError:
                logger.debug("ignoring non-UTF-8 Last-Event-ID header: %r", raw)
                break
            found = _valid_id(value, "header")
            if found is not None:
                return found
            break
    query = scope.get("query_string") or b""
    if isinstance(query, (bytes, bytearray)):
        query = bytes(query).decode("latin-1")
    try:
        pairs = urllib.parse.parse_qsl(
            query, keep_blank_values=True, encoding="utf-8", errors="strict"
        )
    except (UnicodeDecodeError, ValueError):
        logger.debug("ignoring undecodable query string: %r", query)
        return None
    for name, value in pairs:
        if name == "lastEventId":
            return _valid_id(value, "query")
    return None


def last_event_id(scope_or_request: object) -> str | None:
    """Return the client's last event id, or ``None``.

    Accepts an ASGI scope, or any request object that carries one as
    ``.scope`` (Starlette's and Quart's requests do). The ``Last-Event-ID``
    header comes first, then a ``lastEventId`` query parameter (for clients
    that cannot set headers: an EventSource's first request, a browser
    WebSocket). Empty values, values over 256 bytes and values containing
    CR, LF or NUL are ignored (logged at debug level).

    :raises TypeError: for an object that is neither.
    """
    if isinstance(scope_or_request, Mapping):
        return _from_scope(scope_or_request)
    scope = getattr(scope_or_request, "scope", None)
    if isinstance(scope, Mapping):
        return _from_scope(scope)
    raise TypeError(
        "last_event_id() needs an ASGI scope or a request with a .scope, "
        f"got {type(scope_or_request).__name__}"
    )
