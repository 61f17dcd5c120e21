"""An in-memory ASGI client: no sockets, no buffering of whole bodies."""

from __future__ import annotations

import json
import sys
import urllib.parse
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from typing import Any, final

import attrs
import trio

from .._parser import EventParser, MessageEvent
from .._shutdown import ShutdownSignal

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

__all__ = ["EventStream", "Response", "open_stream", "request"]

Message = dict[str, Any]
ASGIApp = Callable[
    [dict[str, Any], Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]],
    Awaitable[None],
]
Headers = Mapping[str, str] | Iterable[tuple[str | bytes, str | bytes]]

_PATH_SAFE = "/%:@!$&'()*+,;=-._~"
_QUERY_SAFE = _PATH_SAFE + "?"


def _as_bytes(value: str | bytes) -> bytes:
    return value.encode("latin-1") if isinstance(value, str) else bytes(value)


def _make_scope(
    method: str, path: str, headers: Headers | None, http_version: str
) -> dict[str, Any]:
    """Build a realistic ASGI 3 ``http`` scope; ``path`` may carry ``?query``."""
    raw, _, query = path.partition("?")
    if not raw.startswith("/"):
        raise ValueError(f"path must start with '/', got {path!r}")
    header_list: list[tuple[bytes, bytes]] = []
    if headers is not None:
        pairs = headers.items() if isinstance(headers, Mapping) else headers
        header_list = [(_as_bytes(n).lower(), _as_bytes(v)) for n, v in pairs]
    if all(name != b"host" for name, _ in header_list):
        header_list.insert(0, (b"host", b"testserver"))
    raw_path = urllib.parse.quote(raw, safe=_PATH_SAFE)
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": http_version,
        "method": method.upper(),
        "scheme": "http",
        "path": urllib.parse.unquote(raw_path),
        "raw_path": raw_path.encode("ascii"),
        "query_string": urllib.parse.quote(query, safe=_QUERY_SAFE).encode("ascii"),
        "root_path": "",
        "headers": header_list,
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }


def _decode_headers(raw: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for name, value in raw:
        key = bytes(name).decode("latin-1").lower()
        text = bytes(value).decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    return headers


class _Protocol:
    """Checks the order of the messages an app sends (start, body..., end)."""

    def __init__(self) -> None:
        self.started = False
        self.complete = False

    def check(self, message: Any) -> None:
        kind = message.get("type") if isinstance(message, Mapping) else None
        if self.complete:
            raise RuntimeError(f"ASGI message {kind!r} sent after the response ended")
        if kind == "http.response.start":
            if self.started:
                raise RuntimeError("http.response.start sent twice")
            self.started = True
        elif kind == "http.response.body":
            if not self.started:
                raise RuntimeError("http.response.body sent before http.response.start")
            if not message.get("more_body", False):
                self.complete = True
        else:
            raise RuntimeError(f"unexpected ASGI message {message!r}")


@final
class EventStream:
    """A response read from an app in memory, incrementally.

    An async iterator of :class:`~trio_sse.MessageEvent`. Made by
    :func:`open_stream`; the app's ``send()`` completes only when the test
    reads the message (as if the client's socket had no buffer), so a test
    that stops reading looks like a client that stopped reading.
    """

    def __init__(
        self,
        messages: trio.MemoryReceiveChannel[Message],
        failure: list[Exception],
    ) -> None:
        #: The HTTP status.
        self.status = 0
        #: Response headers: lower-case names; repeated headers are joined
        #: with ``", "``.
        self.headers: dict[str, str] = {}
        #: The text of every comment line received (keep-alives are ``""``).
        self.comments: list[str] = []
        #: The body of every non-empty ``http.response.body`` message, in
        #: order: one entry per ASGI send, so tests can see coalescing.
        self.chunks: list[bytes] = []
        #: Every event dispatched so far (also those not yet iterated).
        self.events: list[MessageEvent] = []
        #: Whether the final body message (``more_body`` false) arrived.
        self.complete = False
        self._messages = messages
        self._failure = failure
        self._parser = EventParser(on_comment=self.comments.append)
        self._unread: deque[MessageEvent] = deque()
        self._disconnected = trio.Event()
        self._request_sent = False
        self._body = b""
        self._closed = False

    @property
    def raw(self) -> bytes:
        """Every body byte received so far."""
        return b"".join(self.chunks)

    @property
    def last_event_id(self) -> str:
        """The parser's last event id string."""
        return self._parser.last_event_id

    @property
    def retry(self) -> int | None:
        """The latest ``retry`` value received, in milliseconds."""
        return self._parser.retry

    @property
    def disconnected(self) -> bool:
        """Whether :meth:`disconnect` was called (or the stream was closed)."""
        return self._disconnected.is_set()

    def disconnect(self) -> None:
        """Close the connection from the client's side (not a checkpoint).

        The app's next (or pending) ``receive()`` returns ``http.disconnect``;
        later sends are recorded and return at once, as a server does for a
        client that has gone.
        """
        self._disconnected.set()

    async def aclose(self) -> None:
        """Disconnect, then read what the app still sends until it returns."""
        self.disconnect()
        if self._closed:
            return
        self._closed = True
        async for message in self._messages:
            self._record(message)

    async def receive_chunk(self) -> bytes:
        """Return the body of the next non-empty body message.

        The events and comments it holds are recorded (and the events are
        then yielded by iteration).

        :raises trio.EndOfChannel: when the response is complete or the app
            returned.
        """
        while not self.complete:
            try:
                message = await self._messages.receive()
            except (trio.EndOfChannel, trio.ClosedResourceError):
                break
            body = self._record(message)
            if body:
                return body
        raise trio.EndOfChannel

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> MessageEvent:
        while not self._unread:
            try:
                await self.receive_chunk()
            except trio.EndOfChannel:
                raise StopAsyncIteration from None
        return self._unread.popleft()

    def _record(self, message: Message) -> bytes:
        kind = message["type"]
        if kind == "http.response.start":
            self.status = int(message["status"])
            self.headers = _decode_headers(message.get("headers") or ())
            return b""
        body = bytes(message.get("body", b""))
        if not message.get("more_body", False):
            self.complete = True
        if body:
            self.chunks.append(body)
            events = self._parser.feed(body)
            self.events.extend(events)
            self._unread.extend(events)
        return body

    async def _app_receive(self) -> Message:
        if not self._request_sent:
            self._request_sent = True
            return {"type": "http.request", "body": self._body, "more_body": False}
        await self._disconnected.wait()
        return {"type": "http.disconnect"}

    async def _read_start(self) -> None:
        try:
            message = await self._messages.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            if self._failure:
                raise self._failure.pop() from None
            raise RuntimeError("the app returned without starting a response") from None
        self._record(message)


async def _run_app(
    app: ASGIApp,
    scope: dict[str, Any],
    stream: EventStream,
    to_client: trio.MemorySendChannel[Message],
) -> None:
    protocol = _Protocol()

    async def send(message: Any) -> None:
        protocol.check(message)
        if stream.disconnected:
            stream._record(message)
            await trio.lowlevel.checkpoint()
        else:
            await to_client.send(message)

    with to_client:
        try:
            await app(scope, stream._app_receive, send)
        except Exception as exc:
            stream._failure.append(exc)


@asynccontextmanager
async def open_stream(
    app: ASGIApp,
    path: str,
    *,
    headers: Headers | None = None,
    method: str = "GET",
    body: bytes = b"",
    http_version: str = "1.1",
    shutdown: trio.Event | ShutdownSignal | None = None,
) -> AsyncIterator[EventStream]:
    """Open a request to ``app`` and read its response as an event stream.

    Yields once the app has sent its response headers, an
    :class:`EventStream`. Leaving the block sends ``http.disconnect`` and
    waits for the app to return (if the block raised, the app is cancelled
    instead). An exception raised by the app is raised here.

    :param path: the request target; may include ``?query``.
    :param headers: request headers (a mapping or ``(name, value)`` pairs).
    :param body: the request body, delivered as one ``http.request``.
    :param http_version: the scope's ``http_version`` (``"2"`` for HTTP/2).
    :param shutdown: put in the scope as ``scope["trio_sse.shutdown"]``, as
        :func:`~trio_sse.serve` does; set it to simulate a server shutdown.
    """
    scope = _make_scope(method, path, headers, http_version)
    if shutdown is not None:
        scope["trio_sse.shutdown"] = shutdown
    to_client, messages = trio.open_memory_channel[Message](0)
    failure: list[Exception] = []
    stream = EventStream(messages, failure)
    stream._body = bytes(body)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_run_app, app, scope, stream, to_client)
            clean = False
            try:
                await stream._read_start()
                yield stream
                clean = True
            finally:
                stream.disconnect()
                if clean:
                    await stream.aclose()
                else:
                    nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # Raise the block's (or the app's) exception as it was raised,
        # so tests can catch it by type.
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise
    if failure:
        raise failure[0]


@attrs.frozen
class Response:
    """The complete response of :func:`request`."""

    #: The HTTP status.
    status: int
    #: Response headers: lower-case names; repeated headers are joined
    #: with ``", "``.
    headers: dict[str, str]
    #: The whole body.
    body: bytes

    @property
    def text(self) -> str:
        """The body decoded as UTF-8."""
        return self.body.decode("utf-8")

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.body)


async def request(
    app: ASGIApp,
    method: str,
    path: str,
    body: bytes = b"",
    headers: Headers | None = None,
    *,
    http_version: str = "1.1",
) -> Response:
    """Run one request against ``app`` to completion and return the response.

    For routes whose response ends (a ``POST`` that publishes, a health
    check); read event streams with :func:`open_stream`. The app's
    ``receive()`` returns the body, then ``http.disconnect`` once the
    response is complete.
    """
    scope = _make_scope(method, path, headers, http_version)
    protocol = _Protocol()
    done = trio.Event()
    request_sent = False
    status = 0
    header_pairs: list[tuple[bytes, bytes]] = []
    chunks: list[bytes] = []

    async def receive() -> Message:
        nonlocal request_sent
        if not request_sent:
            request_sent = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}
        await done.wait()
        return {"type": "http.disconnect"}

    async def send(message: Any) -> None:
        nonlocal status, header_pairs
        protocol.check(message)
        if message["type"] == "http.response.start":
            status = int(message["status"])
            header_pairs = list(message.get("headers") or ())
        else:
            chunks.append(bytes(message.get("body", b"")))
            if protocol.complete:
                done.set()
        await trio.lowlevel.checkpoint()

    await app(scope, receive, send)
    if not protocol.started:
        raise RuntimeError("the app returned without starting a response")
    return Response(status, _decode_headers(header_pairs), b"".join(chunks))
