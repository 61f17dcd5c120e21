"""SSE over an ASGI http response: the ``text/event-stream`` transport.

An :class:`SseResponse` is a plain ASGI application. The stream's life
(batching, keep-alive, write timeout, disconnect, shutdown) is the
:class:`~trio_sse._driver.StreamDriver`'s; this module only turns its writes
into ``http.response.body`` messages and ``http.disconnect`` into the end.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Callable
from typing import Any, final

import trio

from ._asgi import (
    BODY_WRITER_SCOPE_KEY,
    BodyWriter,
    Headers,
    Receive,
    Scope,
    Send,
    build_headers,
    shutdown_of,
)
from ._config import SseConfig
from ._counters import counters_of
from ._driver import ChannelFunction, End, StreamDriver, is_direct
from ._event import Event
from ._limits import STREAMS_SCOPE_KEY, StreamCount, refusal
from ._pacing import pacer_of

__all__ = ["SseResponse", "StreamOpener", "opening_response", "sse_channel"]

#: What a stream may yield and ``Sender.send`` accepts.
EventLike = Event | str | bytes
#: Makes a response's stream from the request's scope (see
#: :func:`opening_response`).
StreamOpener = Callable[
    [Scope], AsyncIterable[EventLike] | trio.abc.ReceiveChannel[EventLike]
]


@final
class _HttpTransport:
    """Writes a stream as the body of one ASGI http response."""

    __slots__ = ("_body", "_receive", "_send", "_start")

    def __init__(
        self,
        start: dict[str, Any],
        receive: Receive,
        send: Send,
        body: BodyWriter | None = None,
    ) -> None:
        self._start = start
        self._receive = receive
        self._send = send
        # The server's own body writer, if it offers one: fewer layers per
        # write than an ASGI message (see trio_sse.serve).
        status = start["status"]
        self._body = body if status >= 200 and status not in (204, 304) else None

    async def open(self) -> None:
        await self._send(self._start)  # type: ignore[arg-type]

    async def write(self, data: bytes) -> bool:
        body = self._body
        if body is not None and body.usable():
            return await body.write(data)
        await self._send(
            {"type": "http.response.body", "body": data, "more_body": True}
        )
        return True

    async def receive(self) -> str | None:
        # Only http.disconnect ends an http response's messages; a request
        # body the client still sends is read and dropped.
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                return None

    async def close(self, end: End) -> None:
        await self._send(
            {"type": "http.response.body", "body": b"", "more_body": False}
        )


class SseResponse:
    """An ASGI application streaming ``stream`` as ``text/event-stream``.

    ``stream`` is a :class:`trio.abc.ReceiveChannel` or any async iterable of
    :class:`~trio_sse.Event` (or ``str``, sent as ``Event(data=s)``, or
    ``bytes`` holding complete event blocks). Call it as
    ``await response(scope, receive, send)``. Each response serves one
    request; the stream is closed (``aclose()``) when the response ends,
    whatever the reason. An item it cannot write is logged once and skipped.

    A receive channel (a :class:`~trio_sse.BroadcastStream`, a trio memory
    channel, ``@trio.as_safe_channel``) is read by the writer itself, which
    takes every ready event without a task switch. Any other async iterable
    is read by a task of its own, so keep-alives never cancel an async
    generator. ``HEAD`` gets the headers and an empty body.

    :param config: keep-alive, write timeout, ``retry`` and batching
        settings (default :class:`~trio_sse.SseConfig`).
    :param status: the HTTP status.
    :param headers: extra response headers (a mapping or ``(name, value)``
        pairs); a name also set by default replaces the default.
    :param lifetime: end this stream after that many seconds (less up to
        10 % at random) with a final ``retry:``, for example when the
        client's token expires; default ``config.max_lifetime``.
    """

    def __init__(
        self,
        stream: AsyncIterable[EventLike] | trio.abc.ReceiveChannel[EventLike] | None,
        *,
        config: SseConfig | None = None,
        status: int = 200,
        headers: Headers | None = None,
        lifetime: float | None = None,
    ) -> None:
        if isinstance(status, bool) or not isinstance(status, int):
            raise TypeError(f"status must be an int, got {status!r}")
        if stream is not None and not (
            hasattr(stream, "__aiter__") or is_direct(stream)
        ):
            hint = " (call it to get the stream)" if callable(stream) else ""
            raise TypeError(
                "SseResponse needs an async iterable of events, got"
                f" {type(stream).__name__}{hint} (a receive channel works too)"
            )
        #: The stream of events this response serves.
        self.stream = stream
        #: The stream settings.
        self.config = config if config is not None else SseConfig()
        #: The HTTP status.
        self.status = status
        #: The response headers as ASGI ``(name, value)`` byte pairs
        #: (``connection: keep-alive`` is added per request on HTTP/1).
        self.headers = build_headers(headers)
        if lifetime is not None:
            # Validated as SseConfig.max_lifetime is.
            SseConfig(max_lifetime=lifetime)
        #: This stream's maximum lifetime (``None``: ``config.max_lifetime``).
        self.lifetime = lifetime
        self._function: ChannelFunction | None = None
        self._open: StreamOpener | None = None
        self._called = False

    def _start_message(self, scope: Scope) -> dict[str, Any]:
        headers = list(self.headers)
        if scope.get("http_version", "1.1") in ("1.0", "1.1") and all(
            name != b"connection" for name, _ in headers
        ):
            headers.append((b"connection", b"keep-alive"))
        return {
            "type": "http.response.start",
            "status": self.status,
            "headers": headers,
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve the stream on one ASGI ``http`` connection."""
        if scope.get("type") != "http":
            raise TypeError(
                f"SseResponse serves 'http' scopes only, got {scope.get('type')!r}"
            )
        if self._called:
            raise RuntimeError("an SseResponse serves one request only")
        self._called = True
        start = self._start_message(scope)
        if scope.get("method") == "HEAD":
            await self._head(start, send)
            return
        counters = counters_of(scope)
        count = scope.get(STREAMS_SCOPE_KEY)
        if isinstance(count, StreamCount) and not count.acquire(
            self.config.max_streams
        ):
            if counters is not None:
                counters.sse.refused += 1
            await self._refuse(scope, count, send)
            return
        try:
            if self._open is not None:
                self.stream = self._open(scope)
            body = scope.get(BODY_WRITER_SCOPE_KEY)
            transport = _HttpTransport(start, receive, send, body)
            driver = StreamDriver(
                transport,
                self.stream,
                self.config,
                function=self._function,
                shutdown=shutdown_of(scope),
                lifetime=self.lifetime,
                pacer=pacer_of(scope),
                counters=None if counters is None else counters.sse,
            )
            await driver.run()
        finally:
            if isinstance(count, StreamCount):
                count.release()

    async def _refuse(self, scope: Scope, count: StreamCount, send: Send) -> None:
        """Refuse a stream over ``config.max_streams`` (see :func:`refusal`)
        and close the connection, which frees its file descriptor at once:
        the client comes back after the ``retry:``, on a new connection."""
        status, extra, body = refusal(self.config)
        count.refuse()
        if status == 200:
            headers = [pair for pair in self.headers if pair[0] != b"connection"]
        else:
            headers = [(b"content-type", b"text/plain"), *extra]
        if scope.get("http_version", "1.1") in ("1.0", "1.1"):
            headers.append((b"connection", b"close"))
        start = {"type": "http.response.start", "status": status, "headers": headers}
        await self._head(start, send, body)

    async def _head(self, start: dict[str, Any], send: Send, body: bytes = b"") -> None:
        """Close the stream at once, then answer with ``start`` and ``body``
        only (``HEAD``, or a refused stream): no subscriber outlives the
        answer."""
        aclose = getattr(self.stream, "aclose", None)
        if aclose is not None:
            with trio.CancelScope(shield=True):
                await aclose()
        await send(start)  # type: ignore[arg-type]
        await send({"type": "http.response.body", "body": body, "more_body": False})


def sse_channel(
    fn: ChannelFunction,
    config: SseConfig | None = None,
    *,
    status: int = 200,
    headers: Headers | None = None,
) -> SseResponse:
    """Return a response that runs ``await fn(tx)`` in the response's nursery.

    ``fn`` sends with ``await tx.send(event)`` (see
    :class:`~trio_sse.Sender`). The stream ends when ``fn`` returns. An
    exception in ``fn`` is logged on the ``trio_sse`` logger with its
    traceback and ends this stream only. When the client disconnects, ``fn``
    is cancelled at once.
    """
    response = SseResponse(None, config=config, status=status, headers=headers)
    response._function = fn
    return response


def opening_response(
    open_stream: StreamOpener, config: SseConfig | None = None
) -> SseResponse:
    """Return a response whose stream is ``open_stream(scope)``, made only
    once the stream is admitted: never for ``HEAD``, never for a request
    refused over ``config.max_streams``."""
    response = SseResponse(None, config=config)
    response._open = open_stream
    return response
