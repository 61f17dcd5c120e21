"""Event streams over an ASGI WebSocket: the same bytes, as text messages.

A :class:`WebSocketResponse` is a plain ASGI application for ``websocket``
scopes. The stream's life (batching, keep-alive, write timeout, disconnect,
shutdown, lag) is the :class:`~trio_sse._driver.StreamDriver`'s, exactly as
for :class:`~trio_sse.SseResponse`; this module only accepts the connection,
turns each write into one text message, hands the client's text messages to
``on_message`` and closes with a code that says why the stream ended.

Each message holds one or more complete event blocks (or a keep-alive
comment), so :class:`~trio_sse.EventParser` reads a WebSocket stream exactly
as it reads an SSE body.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterable, Mapping
from typing import Final, final

import trio

from ._asgi import Receive, Scope, Send, shutdown_of
from ._config import SseConfig
from ._counters import counters_of
from ._driver import (
    End,
    MessageHandler,
    StreamDriver,
    Transport,
    TransportCounters,
    is_direct,
)
from ._limits import STREAMS_SCOPE_KEY, StreamCount
from ._pacing import Pacer, pacer_of
from ._response import EventLike
from ._shutdown import ShutdownSignal

__all__ = ["CLOSE_CODES", "WebSocketResponse", "close_code"]

logger = logging.getLogger("trio_sse")

#: The close code sent for each way a stream can end (RFC 6455, 7.4.1).
#: A client that went away gets none.
CLOSE_CODES: Final[Mapping[End, int]] = {
    # Normal closure: the stream is over; a client resumes with lastEventId
    # (a lag ends the stream the same way).
    End.ENDED: 1000,
    End.LAGGED: 1000,
    # Going away: the server shuts down.
    End.SHUTDOWN: 1001,
    # The stream's lifetime is over: the client reconnects.
    End.LIFETIME: 1001,
    # Policy violation: the client did not read within the write timeout.
    End.TIMED_OUT: 1008,
    # Internal error: the source or the message handler failed (logged).
    End.FAILED: 1011,
    End.DISCONNECTED: 1000,
}


def close_code(end: End) -> int:
    """The WebSocket close code for a stream that ended with ``end``."""
    return CLOSE_CODES[end]


@final
class _AsgiWebSocketTransport:
    """Writes a stream as text messages of one ASGI WebSocket."""

    __slots__ = ("_receive", "_send")

    def __init__(self, receive: Receive, send: Send) -> None:
        self._receive = receive
        self._send = send

    async def open(self) -> None:
        await self._send(
            {"type": "websocket.accept", "subprotocol": None, "headers": []}
        )

    async def write(self, data: bytes) -> None:
        # Event blocks are UTF-8; invalid bytes are replaced, as an
        # EventSource decoding an SSE body would.
        text = data.decode("utf-8", "replace")
        await self._send({"type": "websocket.send", "bytes": None, "text": text})

    async def receive(self) -> str | None:
        while True:
            message = await self._receive()
            kind = message["type"]
            if kind == "websocket.disconnect":
                return None
            if kind == "websocket.receive":
                text = message.get("text")
                if text is not None:
                    return str(text)
                logger.debug("ignoring a binary WebSocket message from the client")

    async def close(self, end: End) -> None:
        if end is End.DISCONNECTED:
            return  # nobody to tell
        await self._send(
            {"type": "websocket.close", "code": close_code(end), "reason": end.value}
        )


class WebSocketResponse:
    """An ASGI application streaming ``stream`` over a WebSocket.

    ``stream`` is what :class:`~trio_sse.SseResponse` takes: a
    :class:`trio.abc.ReceiveChannel` or any async iterable of
    :class:`~trio_sse.Event`, ``str`` or ``bytes`` blocks. The response
    waits for ``websocket.connect``, accepts, then sends the bytes an
    ``SseResponse`` would write as text messages. Keep-alive comments, the
    write timeout, lag, replay and shutdown behave as for SSE.

    The connection closes with code 1000 when the stream ends (also after a
    lag), 1001 when the server shuts down, 1008 when the client did not read
    within ``config.write_timeout`` and 1011 when the stream or
    ``on_message`` failed (logged on the ``trio_sse`` logger).

    :param config: keep-alive, write timeout, ``retry`` and batching
        settings (default :class:`~trio_sse.SseConfig`).
    :param on_message: ``async def on_message(text)``, called with every
        text message the client sends, one at a time, inside the stream's
        nursery (binary messages are ignored).
    """

    def __init__(
        self,
        stream: AsyncIterable[EventLike] | trio.abc.ReceiveChannel[EventLike],
        *,
        config: SseConfig | None = None,
        on_message: MessageHandler | None = None,
    ) -> None:
        if not (hasattr(stream, "__aiter__") or is_direct(stream)):
            hint = " (call it to get the stream)" if callable(stream) else ""
            raise TypeError(
                "WebSocketResponse needs an async iterable of events, got"
                f" {type(stream).__name__}{hint} (a receive channel works too)"
            )
        if on_message is not None and not callable(on_message):
            raise TypeError(f"on_message must be an async function, got {on_message!r}")
        #: The stream of events this response serves.
        self.stream = stream
        #: The stream settings.
        self.config = config if config is not None else SseConfig()
        #: The handler of the client's text messages, if any.
        self.on_message = on_message
        #: Why the stream ended, once it has (``None`` before).
        self.end: End | None = None
        self._called = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve the stream on one ASGI ``websocket`` connection."""
        if scope.get("type") != "websocket":
            raise TypeError(
                "WebSocketResponse serves 'websocket' scopes only, got"
                f" {scope.get('type')!r}"
            )
        if self._called:
            raise RuntimeError("a WebSocketResponse serves one connection only")
        self._called = True
        try:
            message = await receive()
        except BaseException:
            await _aclose_now(self.stream)
            raise
        if message["type"] != "websocket.connect":
            # The client left during the handshake.
            self.end = End.DISCONNECTED
            await _aclose_now(self.stream)
            return
        counters = counters_of(scope)
        count = scope.get(STREAMS_SCOPE_KEY)
        if isinstance(count, StreamCount) and not count.acquire(
            self.config.max_streams
        ):
            # Over max_streams: close before accepting (try again later).
            if counters is not None:
                counters.websocket.refused += 1
            count.refuse()
            self.end = End.DISCONNECTED
            await _aclose_now(self.stream)
            await send({"type": "websocket.close", "code": 1013, "reason": ""})
            return
        try:
            await self.run(
                _AsgiWebSocketTransport(receive, send),
                shutdown=shutdown_of(scope),
                pacer=pacer_of(scope),
                counters=None if counters is None else counters.websocket,
            )
        finally:
            if isinstance(count, StreamCount):
                count.release()

    async def run(
        self,
        transport: Transport,
        *,
        shutdown: ShutdownSignal | trio.Event | None = None,
        pacer: Pacer | None = None,
        counters: TransportCounters | None = None,
    ) -> None:
        """Run the stream over an accepted-on-open ``transport``.

        For transports other than ASGI:
        :func:`trio_sse.websocket.serve_websocket` serves a response over
        trio-websocket's own server this way. ``counters`` (if any) gets the
        stream's totals.
        """
        driver = StreamDriver(
            transport,
            self.stream,
            self.config,
            on_message=self.on_message,
            shutdown=shutdown,
            pacer=pacer,
            counters=counters,
        )
        try:
            await driver.run()
        finally:
            self.end = driver.end


async def _aclose_now(stream: object) -> None:
    """Close a stream that never started (shielded: it frees a subscription)."""
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        with trio.CancelScope(shield=True):
            try:
                await aclose()
            except Exception:
                logger.exception("closing stream %r failed", stream)
