"""Event streams over WebSocket without an ASGI server, on trio-websocket.

- :func:`open_websocket_source` is a client: an async iterator of
  :class:`~trio_sse.MessageEvent` read from a WebSocket whose text messages
  carry event blocks (what :class:`~trio_sse.WebSocketResponse` sends). It
  follows the model of :func:`trio_sse.client.open_event_source`: it
  reconnects when the connection drops or the server closes it, waits the
  reconnection time (the server's ``retry:`` wins), backs off with jitter on
  repeated failures, and resumes with the id of the last event as the
  ``lastEventId`` query parameter.
- :func:`serve_websocket` serves streams on trio-websocket's own server, for
  plain trio programs: each connection runs under the same stream driver as
  a :class:`~trio_sse.WebSocketResponse`.

trio-websocket is an optional dependency: ``pip install trio-sse[websocket]``.
"""

from __future__ import annotations

import contextlib
import logging
import random
import ssl
import sys
import urllib.parse
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Collection,
    Mapping,
)
from typing import Any, NoReturn, final

import attrs
import trio

from ._asgi import last_event_id as _last_event_id
from ._config import SseConfig
from ._counters import StreamCounters
from ._driver import End
from ._errors import SseError
from ._parser import ParseError
from ._reconnect import ReconnectingSource
from ._response import EventLike
from ._shutdown import ShutdownSignal
from ._websocket import WebSocketResponse, close_code

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

try:
    import trio_websocket
except ImportError as _exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "trio_sse.websocket needs trio-websocket: pip install trio-sse[websocket]"
    ) from _exc

__all__ = [
    "ConnectTimeout",
    "NetworkError",
    "ReadTimeout",
    "StreamRequest",
    "WebSocketSource",
    "WebSocketSourceError",
    "open_websocket_source",
    "serve_websocket",
]

logger = logging.getLogger("trio_sse.websocket")

# The closing handshake of a connection being dropped gets this long.
_CLOSE_TIMEOUT = 1.0
# What a failed connection attempt raises (retried).
_NETWORK_ERRORS = (
    OSError,
    trio.BrokenResourceError,
    trio_websocket.HandshakeError,
    trio_websocket.ConnectionClosed,
)
# Close codes of a server that ended the stream on purpose.
_CLEAN_CLOSES = frozenset({1000, 1001})


class WebSocketSourceError(SseError):
    """The WebSocket event stream cannot be used.

    Raised when the server refuses the handshake with an HTTP status (not
    retried unless the status is in ``retry_statuses``) or the URL cannot be
    used at all.
    """

    def __init__(self, message: str, *, url: str, status: int | None = None) -> None:
        super().__init__(message)
        #: The URL of the stream.
        self.url = url
        #: The HTTP status of a refused handshake, or ``None``.
        self.status = status


class NetworkError(WebSocketSourceError):
    """Connecting failed or the connection dropped (retried on its own)."""


class ConnectTimeout(NetworkError):
    """The handshake did not complete within ``timeout`` seconds."""


class ReadTimeout(NetworkError):
    """No message, not even a keep-alive, arrived for ``timeout`` seconds."""


@attrs.frozen
class _Target:
    """Where a WebSocket URL points."""

    host: str
    port: int
    host_header: str
    path: str
    query: list[tuple[str, str]]
    secure: bool

    @classmethod
    def parse(cls, url: str) -> _Target:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("ws", "wss") or not parts.hostname:
            raise WebSocketSourceError(f"not a ws:// or wss:// URL: {url!r}", url=url)
        secure = parts.scheme == "wss"
        try:
            port = parts.port or (443 if secure else 80)
        except ValueError as exc:
            raise WebSocketSourceError(f"bad port in {url!r}", url=url) from exc
        host = parts.hostname
        shown = f"[{host}]" if ":" in host else host
        host_header = shown if port == (443 if secure else 80) else f"{shown}:{port}"
        query = [
            pair
            for pair in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
            if pair[0] != "lastEventId"
        ]
        return cls(host, port, host_header, parts.path or "/", query, secure)

    def resource(self, last_event_id: str) -> str:
        query = list(self.query)
        if last_event_id:
            query.append(("lastEventId", last_event_id))
        encoded = urllib.parse.urlencode(query)
        return f"{self.path}?{encoded}" if encoded else self.path


@final
class WebSocketSource(ReconnectingSource[WebSocketSourceError]):
    """An async iterator of the :class:`~trio_sse.MessageEvent` of one stream.

    Get one from :func:`open_websocket_source`. Iterating connects (and
    reconnects) as needed; iteration ends only when ``max_reconnects`` gives
    up on a stream the server closed cleanly. Its ``url`` gets
    ``lastEventId`` added per connection.
    """

    _logger = logger

    def __init__(
        self,
        nursery: trio.Nursery,
        url: str,
        *,
        headers: Mapping[str, str] | None,
        last_event_id: str | None,
        retry: float,
        max_retry: float,
        timeout: float | None,
        retry_statuses: Collection[int],
        max_reconnects: int | None,
        max_event_size: int | None,
        ssl_context: ssl.SSLContext | None,
        rng: random.Random,
    ) -> None:
        super().__init__(
            url,
            last_event_id=last_event_id,
            retry=retry,
            max_retry=max_retry,
            timeout=timeout,
            retry_statuses=retry_statuses,
            max_reconnects=max_reconnects,
            max_event_size=max_event_size,
            rng=rng,
        )
        self._nursery = nursery
        self._target = _Target.parse(url)
        self._headers = [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
        self._ssl_context = ssl_context
        #: The close code of the latest connection the server closed.
        self.close_code: int | None = None
        self._ws: trio_websocket.WebSocketConnection | None = None
        self._stream: trio.abc.Stream | None = None

    @property
    def connected(self) -> bool:
        """Whether a connection is open and being read."""
        return self._ws is not None

    async def send(self, text: str) -> None:
        """Send a text message to the server on the current connection.

        A :class:`~trio_sse.WebSocketResponse` hands it to its
        ``on_message``. Messages are not queued across reconnections.

        :raises trio.BrokenResourceError: when no connection is open.
        """
        ws = self._ws
        if ws is None:
            raise trio.BrokenResourceError(f"not connected to {self.url}")
        try:
            await ws.send_message(text)
        except trio_websocket.ConnectionClosed as exc:
            raise trio.BrokenResourceError(f"{self.url} closed the connection") from exc

    async def aclose(self) -> None:
        """Close the connection; iterating afterwards is an error."""
        self._closed = True
        self._pending.clear()
        await self._disconnect()

    # -- internals -------------------------------------------------------

    async def _connect(self) -> None:
        await self._disconnect()
        if not await self._wait_to_reconnect():
            return
        target = self._target
        stream: trio.abc.Stream | None = None
        try:
            with trio.move_on_after(self._timeout) as scope:
                if target.secure:
                    context = self._ssl_context or ssl.create_default_context()
                    stream = await trio.open_ssl_over_tcp_stream(
                        target.host,
                        target.port,
                        ssl_context=context,
                        https_compatible=True,
                    )
                else:
                    stream = await trio.open_tcp_stream(target.host, target.port)
                ws = await self._nursery.start(
                    self._run_connection,
                    stream,
                    target.resource(self._committed_id),
                )
        except Exception as caught:
            await _close_stream(stream)
            exc = _unwrap(caught)
            if isinstance(exc, trio_websocket.ConnectionRejected):
                error = WebSocketSourceError(
                    f"{self.url} refused the WebSocket with HTTP {exc.status_code}",
                    url=self.url,
                    status=exc.status_code,
                )
                if exc.status_code in self._retry_statuses:
                    self._fail(error)
                    return
                self._done = True
                raise error from exc
            if not isinstance(exc, _NETWORK_ERRORS):
                raise
            detail = str(exc) or type(exc).__name__
            self._fail(
                NetworkError(f"connection to {self.url} failed: {detail}", url=self.url)
            )
            return
        except BaseException:
            await _close_stream(stream)
            raise
        if scope.cancelled_caught:
            await _close_stream(stream)
            self._fail(
                ConnectTimeout(
                    f"no WebSocket handshake with {self.url} within {self._timeout} s",
                    url=self.url,
                )
            )
            return
        self._ws, self._stream = ws, stream
        self._failures = 0

    async def _run_connection(
        self,
        stream: trio.SocketStream | trio.SSLStream[trio.SocketStream],
        resource: str,
        *,
        task_status: trio.TaskStatus[trio_websocket.WebSocketConnection],
    ) -> None:
        """Own one connection: its reader task runs in a nursery of this task.

        trio-websocket reports a refused handshake from the reader task; a
        nursery per connection turns that into an error of the attempt
        (raised by ``nursery.start``) rather than of the whole source.
        """
        started = False
        try:
            async with trio.open_nursery() as nursery:
                ws = await trio_websocket.wrap_client_stream(
                    nursery,
                    stream,
                    self._target.host_header,
                    resource,
                    extra_headers=list(self._headers),
                )
                started = True
                task_status.started(ws)
        except Exception as exc:
            if not started:
                raise _unwrap(exc) from None
            # The reader ended with an error: get_message() reports the
            # connection closed.
            logger.debug("%s: the connection failed: %r", self.url, exc)
        finally:
            await _close_stream(stream)

    async def _receive(self) -> None:
        ws = self._ws
        if ws is None:  # pragma: no cover - guarded by __anext__
            return
        try:
            with trio.move_on_after(self._timeout) as scope:
                message = await ws.get_message()
        except trio_websocket.ConnectionClosed as exc:
            code = exc.reason.code if exc.reason is not None else None
            self.close_code = code
            await self._disconnect()
            if code in _CLEAN_CLOSES:
                logger.info("%s closed the stream (%s); reconnecting", self.url, code)
                self._fail(None)
            else:
                self._fail(
                    NetworkError(f"{self.url} closed with code {code}", url=self.url)
                )
            return
        if scope.cancelled_caught:
            await self._disconnect()
            self._fail(
                ReadTimeout(
                    f"no message from {self.url} for {self._timeout} s", url=self.url
                )
            )
            return
        data = message.encode("utf-8") if isinstance(message, str) else message
        self._delivered_id = self._committed_id
        try:
            events = self._parser.feed(data)
        except ParseError:
            self._done = True
            await self._disconnect()
            raise
        self._pending.extend(events)
        self._committed_id = self._parser.last_event_id
        if self._parser.retry is not None:
            self._retry = self._parser.retry / 1000

    async def _disconnect(self) -> None:
        ws, self._ws = self._ws, None
        stream, self._stream = self._stream, None
        if ws is None:
            return
        # The next connection is a new stream for the parser.
        self._parser.close()
        with trio.CancelScope(shield=True) as scope:
            scope.deadline = trio.current_time() + _CLOSE_TIMEOUT
            with contextlib.suppress(trio_websocket.ConnectionClosed):
                await ws.aclose()
        # Closing the TCP stream ends the connection's reader task.
        await _close_stream(stream)


def _unwrap(exc: Exception) -> Exception:
    """The one exception inside (nested) exception groups, or ``exc``."""
    while True:
        inner: tuple[BaseException, ...] = getattr(exc, "exceptions", ())
        if len(inner) != 1 or not isinstance(inner[0], Exception):
            return exc
        exc = inner[0]


async def _close_stream(stream: trio.abc.Stream | None) -> None:
    if stream is not None:
        await trio.aclose_forcefully(stream)


@contextlib.asynccontextmanager
async def open_websocket_source(
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    last_event_id: str | None = None,
    retry: float = 3.0,
    max_retry: float = 60.0,
    timeout: float | None = 45.0,  # noqa: ASYNC109 (a read timeout, not a deadline)
    retry_statuses: Collection[int] = (),
    max_reconnects: int | None = None,
    max_event_size: int | None = None,
    ssl_context: ssl.SSLContext | None = None,
    rng: random.Random | None = None,
) -> AsyncIterator[WebSocketSource]:
    """Connect to the WebSocket event stream at ``url``; yield a source.

    Nothing connects until the first event is awaited. The connection's
    reader task runs in a nursery this context manager owns; leaving the
    block closes the connection.

    :param headers: extra handshake headers.
    :param last_event_id: resume after this id (sent as the ``lastEventId``
        query parameter, then the id of the last event received).
    :param retry: reconnection time in seconds until the server sends
        ``retry:``.
    :param max_retry: upper bound of any wait between attempts.
    :param timeout: seconds without a message (keep-alives count) after
        which the connection counts as dropped; also bounds the handshake.
        ``None`` waits forever.
    :param retry_statuses: HTTP statuses of a refused handshake that are
        retried like network errors instead of raised.
    :param max_reconnects: give up after this many consecutive
        reconnections without an accepted connection; ``None`` retries
        forever.
    :param max_event_size: the most bytes one event may take.
    :param ssl_context: for ``wss://`` URLs (default: the system's).
    :param rng: source of the backoff jitter.
    :raises WebSocketSourceError: while iterating, on a refused handshake.
    """
    if retry < 0 or max_retry < 0:
        raise ValueError("retry and max_retry must be >= 0")
    if timeout is not None and timeout <= 0:
        raise ValueError("timeout must be > 0 or None")
    if max_reconnects is not None and max_reconnects < 0:
        raise ValueError("max_reconnects must be >= 0 or None")
    try:
        async with trio.open_nursery() as nursery:
            source = WebSocketSource(
                nursery,
                str(url),
                headers=headers,
                last_event_id=last_event_id,
                retry=retry,
                max_retry=max_retry,
                timeout=timeout,
                retry_statuses=retry_statuses,
                max_reconnects=max_reconnects,
                max_event_size=max_event_size,
                ssl_context=ssl_context,
                rng=random.Random() if rng is None else rng,
            )
            try:
                yield source
            finally:
                await source.aclose()
    except BaseExceptionGroup as group:
        # The connection tasks never raise: an error is the block's own (or
        # a cancellation); raise it as it was raised.
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise


# -- serving -------------------------------------------------------------------


@final
@attrs.frozen
class StreamRequest:
    """A WebSocket handshake request, as :func:`serve_websocket` hands it over."""

    #: trio-websocket's request (path, headers, subprotocols, remote address).
    request: trio_websocket.WebSocketRequest
    #: An ASGI-like scope (``path``, ``query_string``, ``headers``), so that
    #: ``trio_sse.last_event_id(request)`` works.
    scope: Mapping[str, Any]

    @property
    def path(self) -> str:
        """The request path, without the query."""
        return str(self.scope["path"])

    @property
    def last_event_id(self) -> str | None:
        """The client's last event id (``lastEventId`` query or header)."""
        return _last_event_id(self.scope)

    @classmethod
    def of(cls, request: trio_websocket.WebSocketRequest) -> StreamRequest:
        path, _, query = request.path.partition("?")
        scope = {
            "type": "websocket",
            "path": urllib.parse.unquote(path),
            "query_string": query.encode("latin-1", "replace"),
            "headers": [(bytes(k).lower(), bytes(v)) for k, v in request.headers],
        }
        return cls(request, scope)


#: What a :func:`serve_websocket` handler returns: a response (for
#: ``on_message`` or a config of its own), a stream, or ``None`` to refuse.
StreamAnswer = (
    WebSocketResponse
    | AsyncIterable[EventLike]
    | trio.abc.ReceiveChannel[EventLike]
    | None
)


@final
class _TrioWebSocketTransport:
    """The driver's transport over one trio-websocket server connection."""

    __slots__ = ("_opened", "_request", "_ws")

    def __init__(self, request: trio_websocket.WebSocketRequest) -> None:
        self._request = request
        self._ws: trio_websocket.WebSocketConnection | None = None
        self._opened = trio.Event()

    async def open(self) -> None:
        try:
            self._ws = await self._request.accept()
        except trio_websocket.ConnectionClosed as exc:
            raise trio.BrokenResourceError("the client left") from exc
        self._opened.set()

    async def write(self, data: bytes) -> None:
        assert self._ws is not None
        try:
            await self._ws.send_message(data.decode("utf-8", "replace"))
        except trio_websocket.ConnectionClosed as exc:
            raise trio.BrokenResourceError("the client left") from exc

    async def receive(self) -> str | None:
        await self._opened.wait()
        assert self._ws is not None
        while True:
            try:
                message = await self._ws.get_message()
            except trio_websocket.ConnectionClosed:
                return None
            if isinstance(message, str):
                return message
            logger.debug("ignoring a binary WebSocket message from the client")

    async def close(self, end: End) -> None:
        if self._ws is not None and end is not End.DISCONNECTED:
            await self._ws.aclose(close_code(end), end.value)


async def _serve_one(
    handler: Callable[[StreamRequest], Awaitable[StreamAnswer]],
    request: trio_websocket.WebSocketRequest,
    config: SseConfig,
    shutdown: ShutdownSignal,
    metrics: StreamCounters | None = None,
) -> None:
    try:
        answer = await handler(StreamRequest.of(request))
    except Exception:
        logger.exception("WebSocket stream handler %r failed", handler)
        await request.reject(500)
        return
    if answer is None:
        await request.reject(404)
        return
    response = (
        answer
        if isinstance(answer, WebSocketResponse)
        else WebSocketResponse(answer, config=config)
    )
    await response.run(
        _TrioWebSocketTransport(request),
        shutdown=shutdown,
        counters=None if metrics is None else metrics.websocket,
    )


async def serve_websocket(
    handler: Callable[[StreamRequest], Awaitable[StreamAnswer]],
    host: str | None,
    port: int,
    *,
    config: SseConfig | None = None,
    ssl_context: ssl.SSLContext | None = None,
    graceful_timeout: float = 3.0,
    message_queue_size: int = 1,
    max_message_size: int = 2**20,
    metrics: StreamCounters | None = None,
    task_status: trio.TaskStatus[
        trio_websocket.WebSocketServer
    ] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Serve event streams over WebSocket on trio-websocket's server.

    ``await handler(request)`` gets a :class:`StreamRequest` for each
    handshake and returns what to stream: a
    :class:`~trio_sse.WebSocketResponse` (``bc.websocket(stream,
    on_message=...)``), a stream (served with ``config``), or ``None`` to
    refuse with 404. An exception in it is logged and refuses with 500.
    Each stream then runs under the same driver as a ``WebSocketResponse``
    on an ASGI server: keep-alive, write timeout, close codes.

    Use it as trio-websocket's ``serve_websocket``::

        server = await nursery.start(serve_websocket, handler, "127.0.0.1", 0)
        print(server.port)

    Cancelling it shuts down gracefully: it stops listening, open streams
    end with close code 1001 (after a final ``retry:`` if
    ``config.shutdown_retry`` is set), and whatever still runs after
    ``graceful_timeout`` seconds is cancelled.

    With ``metrics`` (a :class:`trio_sse.metrics.Metrics` or any
    :class:`~trio_sse.StreamCounters`), the streams are counted there as
    ``websocket`` streams.
    """
    if metrics is not None and not isinstance(metrics, StreamCounters):
        raise TypeError(
            "metrics must be a trio_sse.metrics.Metrics (or a StreamCounters),"
            f" got {metrics!r}"
        )
    stream_config = config if config is not None else SseConfig()
    shutdown = ShutdownSignal()

    async def serve_one(request: trio_websocket.WebSocketRequest) -> None:
        await _serve_one(handler, request, stream_config, shutdown, metrics)

    # The connections run in a nursery shielded from the caller's
    # cancellation, so that they can end cleanly when it comes.
    handlers_scope = trio.CancelScope(shield=True)
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        handlers: trio.Nursery = await nursery.start(_hold, handlers_scope, stop)
        try:
            server = await nursery.start(
                _listen,
                serve_one,
                host,
                port,
                ssl_context,
                handlers,
                message_queue_size,
                max_message_size,
            )
            task_status.started(server)
            await trio.sleep_forever()
        finally:
            # Cancelled: stop accepting; open streams end with 1001 within
            # the grace period, then whatever still runs is cancelled.
            shutdown.set()
            stop.set()
            handlers_scope.deadline = trio.current_time() + graceful_timeout
    raise AssertionError("unreachable: sleep_forever() only ends by cancellation")


async def _hold(
    scope: trio.CancelScope,
    stop: trio.Event,
    *,
    task_status: trio.TaskStatus[trio.Nursery],
) -> None:
    """Open a nursery inside ``scope``; hand it over; close it once ``stop`` is set."""
    with scope:
        async with trio.open_nursery() as nursery:
            task_status.started(nursery)
            await stop.wait()


async def _listen(
    serve_one: Callable[[trio_websocket.WebSocketRequest], Awaitable[None]],
    host: str | None,
    port: int,
    ssl_context: ssl.SSLContext | None,
    handlers: trio.Nursery,
    message_queue_size: int,
    max_message_size: int,
    *,
    task_status: trio.TaskStatus[trio_websocket.WebSocketServer],
) -> NoReturn:
    await trio_websocket.serve_websocket(
        serve_one,
        host,
        port,
        ssl_context,
        handler_nursery=handlers,
        message_queue_size=message_queue_size,
        max_message_size=max_message_size,
        task_status=task_status,
    )
