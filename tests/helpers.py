"""Shared test helpers: a real server on 127.0.0.1 and a raw HTTP/1.1 client.

Imported by test modules as ``from helpers import serve_app``; the fixtures
in ``conftest.py`` hand out the same functions.

``open_server(app, **serve_kwargs)`` runs *app* with :func:`trio_sse.serve`
on ``127.0.0.1`` port 0 and yields the base URL::

    async def test_x(open_server, open_http):
        async with open_server(app) as url, open_http(url, "/events") as http:
            await http.receive_response()
            await http.read_until(b"\\n\\n")

Leaving the block cancels the server (a graceful shutdown) and waits for it.

``open_http(url, path, ...)`` sends one request on a fresh TCP connection
and reads the response incrementally with h11: ``status``, ``headers``,
``body`` (de-chunked), ``raw`` (bytes off the wire), ``events()`` (the body
parsed as SSE). ``rcvbuf=`` shrinks the socket's receive buffer, for clients
that stop reading.
"""

from __future__ import annotations

import math
import socket
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from functools import partial
from typing import Any
from urllib.parse import urlsplit

import h11
import trio

import trio_sse


@asynccontextmanager
async def serve_app(app: Any, **serve_kwargs: Any) -> AsyncIterator[str]:
    """Serve *app* on 127.0.0.1, a free port; yield ``"http://127.0.0.1:PORT"``."""
    async with trio.open_nursery() as nursery:
        urls = await nursery.start(
            partial(trio_sse.serve, app, "127.0.0.1", 0, **serve_kwargs)
        )
        try:
            yield urls[0]
        finally:
            nursery.cancel_scope.cancel()


class HttpStream:
    """One HTTP/1.1 request on its own connection, read as the bytes arrive."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.conn = h11.Connection(h11.CLIENT)
        #: Every byte received, chunked framing included.
        self.raw = bytearray()
        #: The response body received so far, without chunked framing.
        self.body = bytearray()
        self.status: int | None = None
        #: Response headers, lower-case names and values.
        self.headers: dict[str, str] = {}
        #: The response ended with a complete message (``0\\r\\n\\r\\n`` if chunked).
        self.complete = False
        #: The server closed the connection.
        self.eof = False

    async def send_request(
        self,
        method: str,
        host: str,
        path: str,
        headers: Sequence[tuple[str, str]],
        body: bytes,
    ) -> None:
        all_headers = [("host", host), *headers]
        if body:
            all_headers.append(("content-length", str(len(body))))
        data = self.conn.send(
            h11.Request(method=method, target=path, headers=all_headers)
        )
        assert data is not None
        if body:
            data += self.conn.send(h11.Data(data=body)) or b""
        data += self.conn.send(h11.EndOfMessage()) or b""
        await self.stream.send_all(data)

    async def receive_some(self) -> None:
        """Read once from the socket and digest what came."""
        if self.eof:
            raise EOFError("the server closed the connection")
        data = await self.stream.receive_some(65536)
        if not data:
            self.eof = True
        self.raw += data
        self.conn.receive_data(bytes(data))
        while True:
            event = self.conn.next_event()
            if event is h11.NEED_DATA or event is h11.PAUSED:
                break
            if isinstance(event, h11.Response):
                self.status = event.status_code
                self.headers = {
                    name.decode("latin-1").lower(): value.decode("latin-1")
                    for name, value in event.headers
                }
            elif isinstance(event, h11.Data):
                self.body += event.data
            elif isinstance(event, h11.EndOfMessage):
                self.complete = True
            elif isinstance(event, h11.ConnectionClosed):
                break

    async def receive_response(self) -> int:
        """Wait for the status line and headers; return the status."""
        while self.status is None:
            await self.receive_some()
        return self.status

    async def read_until(self, marker: bytes, *, count: int = 1) -> None:
        """Read until *marker* occurs *count* times in the body."""
        while self.body.count(marker) < count:
            await self.receive_some()

    async def read_to_end(self) -> None:
        """Read until the response is complete or the server closes."""
        while not (self.complete or self.eof):
            await self.receive_some()

    def events(self) -> list[trio_sse.MessageEvent]:
        """The body received so far, parsed as an event stream."""
        return trio_sse.EventParser().feed(bytes(self.body))

    def comments(self) -> list[str]:
        """Comment lines (``:...``) of the body received so far."""
        lines = bytes(self.body).decode("utf-8", "replace").splitlines()
        return [line[1:].lstrip(" ") for line in lines if line.startswith(":")]


@asynccontextmanager
async def open_http_stream(
    url: str,
    path: str = "/",
    *,
    method: str = "GET",
    headers: Sequence[tuple[str, str]] = (),
    body: bytes = b"",
    rcvbuf: int | None = None,
) -> AsyncIterator[HttpStream]:
    """Connect to *url*, send one request for *path*, yield the response reader."""
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_STREAM)
    try:
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        await sock.connect((parts.hostname, parts.port))
    except BaseException:
        sock.close()
        raise
    async with trio.SocketStream(sock) as stream:
        http = HttpStream(stream)
        await http.send_request(method, parts.netloc, path, headers, body)
        yield http


# -- an in-memory ASGI WebSocket client ----------------------------------------


class WebSocketSession:
    """The client side of one in-memory ASGI ``websocket`` connection.

    The app's ``send()`` completes only when the test reads the message (as
    if the client's socket had no buffer), so a test that stops reading
    looks like a client that stopped reading. After :meth:`disconnect`, the
    app's sends are recorded and return at once.
    """

    def __init__(self, messages: trio.MemoryReceiveChannel[dict[str, Any]]) -> None:
        self._messages = messages
        self._to_app_send, self._to_app = trio.open_memory_channel[dict[str, Any]](
            math.inf
        )
        self._parser = trio_sse.EventParser(on_comment=self._comment)
        #: Whether the app accepted the connection.
        self.accepted = False
        #: The text of every ``websocket.send`` received, in order.
        self.texts: list[str] = []
        #: Every event dispatched so far.
        self.events: list[trio_sse.MessageEvent] = []
        #: Comment lines received (keep-alives are ``""``).
        self.comments: list[str] = []
        #: The close message's code, once the app closed.
        self.close_code: int | None = None
        self.disconnected = False
        #: Set when the app returned.
        self.app_done = trio.Event()
        self._next_event = 0

    def _comment(self, text: str) -> None:
        self.comments.append(text)

    def record(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "websocket.accept":
            self.accepted = True
        elif kind == "websocket.send":
            text = message.get("text")
            assert isinstance(text, str), message
            self.texts.append(text)
            self.events.extend(self._parser.feed(text.encode()))
        elif kind == "websocket.close":
            self.close_code = int(message.get("code", 1000))
        else:
            raise AssertionError(f"unexpected ASGI message {message!r}")

    async def app_receive(self) -> dict[str, Any]:
        return await self._to_app.receive()

    def send_text(self, text: str) -> None:
        """Send a text message to the app."""
        self._to_app_send.send_nowait({"type": "websocket.receive", "text": text})

    def send_bytes(self, data: bytes) -> None:
        """Send a binary message to the app."""
        self._to_app_send.send_nowait({"type": "websocket.receive", "bytes": data})

    def disconnect(self, code: int = 1000) -> None:
        """The client leaves: the app receives ``websocket.disconnect``."""
        if not self.disconnected:
            self.disconnected = True
            self._to_app_send.send_nowait(
                {"type": "websocket.disconnect", "code": code}
            )

    async def receive_text(self) -> str:
        """The next text message; :exc:`trio.EndOfChannel` once the app closed."""
        while True:
            message = await self._messages.receive()
            self.record(message)
            if message["type"] == "websocket.send":
                return self.texts[-1]
            if message["type"] == "websocket.close":
                raise trio.EndOfChannel

    async def receive_event(self) -> trio_sse.MessageEvent:
        """The next event not returned yet (messages are read as needed)."""
        while len(self.events) <= self._next_event:
            await self.receive_text()
        self._next_event += 1
        return self.events[self._next_event - 1]

    async def read_to_close(self) -> None:
        """Read every message until the app closes or returns."""
        async for message in self._messages:
            self.record(message)


@asynccontextmanager
async def open_websocket_app(
    app: Any,
    path: str = "/",
    *,
    headers: Sequence[tuple[bytes, bytes]] = (),
    shutdown: Any = None,
) -> AsyncIterator[WebSocketSession]:
    """Run *app* on an in-memory ``websocket`` scope; yield once it answered.

    Leaving the block disconnects the client and waits for the app to
    return, reading what it still sends.
    """
    raw, _, query = path.partition("?")
    scope: dict[str, Any] = {
        "type": "websocket",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "scheme": "ws",
        "path": raw,
        "raw_path": raw.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": [(b"host", b"testserver"), *headers],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
        "subprotocols": [],
    }
    if shutdown is not None:
        scope["trio_sse.shutdown"] = shutdown
    to_client, messages = trio.open_memory_channel[dict[str, Any]](0)
    session = WebSocketSession(messages)

    async def send(message: dict[str, Any]) -> None:
        if session.disconnected:
            session.record(message)
            await trio.lowlevel.checkpoint()
        else:
            await to_client.send(message)

    async def run() -> None:
        try:
            with to_client:
                await app(scope, session.app_receive, send)
        finally:
            session.app_done.set()

    async with trio.open_nursery() as nursery:
        session._to_app_send.send_nowait({"type": "websocket.connect"})
        nursery.start_soon(run)
        first = await messages.receive()
        session.record(first)
        try:
            yield session
        finally:
            session.disconnect()
            await session.read_to_close()
