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

import importlib.util
import json
import math
import os
import random
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
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


class BroadcastApp:
    """``GET /<key>`` streams broadcaster key ``<key>``; tracks subscriptions.

    ``closed`` holds one :class:`trio.Event` per stream request, set when its
    subscription has been closed (the broadcaster forgot the subscriber).
    """

    def __init__(self, config: trio_sse.SseConfig, *, buffer: int = 32) -> None:
        self.bc: trio_sse.Broadcaster[str, trio_sse.Event] = trio_sse.Broadcaster(
            buffer=buffer, config=config
        )
        self.closed: list[trio.Event] = []
        #: Set (and replaced) whenever a subscription opens.
        self.subscribed = trio.Event()

    async def _tracked(
        self, stream: trio_sse.BroadcastStream[trio_sse.Event], closed: trio.Event
    ) -> AsyncIterator[trio_sse.Event]:
        try:
            async with stream:
                async for event in stream:
                    yield event
        finally:
            closed.set()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        stream = self.bc.subscribe(scope["path"].strip("/"))
        closed = trio.Event()
        self.closed.append(closed)
        self.subscribed.set()
        self.subscribed = trio.Event()
        await self.bc.response(self._tracked(stream, closed))(scope, receive, send)


# -- a real redis-server ----------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def free_cluster_port() -> int:
    """A free port P <= 55535 whose cluster bus port P + 10000 is free too."""
    rng = random.Random()
    for _ in range(1000):
        port = rng.randrange(20000, 45000)
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 10000))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


class RedisServer:
    """A real ``redis-server`` on 127.0.0.1, in its own directory.

    The append-only file is on with ``fsync`` at every write, so a server
    killed with SIGKILL and started again keeps every entry it acknowledged.
    ``start()`` returns once the server answers ``PING``.
    """

    def __init__(
        self,
        binary: str,
        directory: Path,
        port: int | None = None,
        *,
        cluster: bool = False,
    ):
        self.binary = binary
        self.cluster = cluster
        self.directory = directory
        if port is None:
            port = free_cluster_port() if cluster else free_port()
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None
        directory.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> None:
        args = [
            self.binary,
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--dir", str(self.directory),
            "--save", "",
            "--appendonly", "yes",
            "--appendfsync", "always",
            "--logfile", str(self.directory / "redis.log"),
        ]  # fmt: skip
        if self.cluster:
            args += ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
        self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                log = (self.directory / "redis.log").read_text(errors="replace")
                raise RuntimeError(f"redis-server exited at start:\n{log}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), 1) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(64).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not answer within {timeout} s")
            time.sleep(0.01)

    def kill(self) -> None:
        """SIGKILL the server (no shutdown, no final save) and reap it."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def stop(self) -> None:
        """Terminate the server and reap it."""
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None


@asynccontextmanager
async def open_failover_proxy(
    ports: Sequence[int], used: list[int] | None = None
) -> AsyncIterator[str]:
    """A TCP proxy on 127.0.0.1: a load balancer with health checks in miniature.

    Each connection goes to the first of *ports* that accepts one (its port
    is appended to *used*); when either side closes, both are closed. Yields
    ``"http://127.0.0.1:PORT"``.
    """

    async def pump(
        source: trio.SocketStream, sink: trio.SocketStream, done: trio.CancelScope
    ) -> None:
        try:
            async for chunk in source:
                await sink.send_all(chunk)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            done.cancel()

    async def handle(client: trio.SocketStream) -> None:
        async with client:
            for port in ports:
                try:
                    upstream = await trio.open_tcp_stream("127.0.0.1", port)
                except OSError:
                    continue
                if used is not None:
                    used.append(port)
                async with upstream, trio.open_nursery() as nursery:
                    nursery.start_soon(pump, client, upstream, nursery.cancel_scope)
                    nursery.start_soon(pump, upstream, client, nursery.cancel_scope)
                return

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            partial(trio.serve_tcp, handle, 0, host="127.0.0.1")
        )
        port = listeners[0].socket.getsockname()[1]
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            nursery.cancel_scope.cancel()


class RedisCluster:
    """A real 3-node Redis Cluster (no replicas) on free ports of 127.0.0.1.

    Each node is a :class:`RedisServer` started with ``--cluster-enabled yes``;
    ``redis-cli --cluster create`` assigns the slots, and ``start()`` returns
    once ``CLUSTER INFO`` reports ``cluster_state:ok`` on every node.
    """

    def __init__(self, binary: str, cli: str, directory: Path) -> None:
        self.cli = cli
        self.nodes = [
            RedisServer(binary, directory / f"node{i}", cluster=True) for i in range(3)
        ]

    @property
    def ports(self) -> list[int]:
        return [node.port for node in self.nodes]

    def start(self, timeout: float = 30.0) -> None:
        for node in self.nodes:
            node.start()
        addresses = [f"127.0.0.1:{port}" for port in self.ports]
        subprocess.run(
            [self.cli, "--cluster", "create", *addresses, "--cluster-yes"],
            check=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            timeout=timeout,
        )
        deadline = time.monotonic() + timeout
        for port in self.ports:
            while True:
                info = subprocess.run(
                    [self.cli, "-p", str(port), "cluster", "info"],
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout
                if "cluster_state:ok" in info:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"cluster not ready on port {port}:\n{info}")
                time.sleep(0.05)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


async def wait_subscribers(bc: Any, key: Any, count: int, limit: float = 5) -> None:
    """Wait (bounded) until *key* of the broadcaster *bc* has *count* subscribers.

    Subscribing and unsubscribing happen in the server's tasks, which offer
    no hook to wait on, so this polls every millisecond for at most *limit*
    seconds.
    """
    with trio.fail_after(limit):
        while bc.subscriber_count(key) != count:  # noqa: ASYNC110
            await trio.sleep(0.001)


# -- headless Chromium (playwright-core from npm, see tests/browser) ----------

BROWSER_DIR = Path(__file__).parent / "browser"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


def browser_missing() -> list[str]:
    """What a browser test lacks on this machine (empty: it can run)."""
    missing = []
    if shutil.which("node") is None:
        missing.append("node (Node.js 18 or later)")
    if not os.access(CHROMIUM, os.X_OK):
        missing.append(f"{CHROMIUM} (apt-get install -y chromium)")
    if not (BROWSER_DIR / "node_modules" / "playwright-core").is_dir():
        missing.append("playwright-core (npm ci --prefix tests/browser)")
    return missing


async def run_chromium(
    url: str, limit: float = 60, *, chromium: str = CHROMIUM
) -> dict[str, Any]:
    """Open *url* in headless Chromium; return the page's ``window.verdict``.

    The page must set ``window.verdict`` (any JSON value) when it is done;
    *limit* bounds the whole run, browser launch included. *chromium* is
    the browser executable (a wrapper script may add flags).
    """
    env = dict(os.environ, CHROMIUM=chromium)
    with trio.fail_after(limit + 10):
        result = await trio.run_process(
            ["node", str(BROWSER_DIR / "driver.mjs"), url, str(int(limit * 1000))],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            env=env,
        )
    lines = result.stdout.decode().strip().splitlines()
    assert lines, f"driver printed nothing; stderr:\n{result.stderr.decode()}"
    report: dict[str, Any] = json.loads(lines[-1])
    assert report["ok"], (report.get("error"), report.get("console"))
    assert result.returncode == 0
    verdict: dict[str, Any] = report["verdict"]
    return verdict


def load_example(name: str) -> Any:
    """Import ``examples/<name>.py`` as a fresh module (not cached)."""
    path = Path(__file__).resolve().parent.parent / "examples" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"example_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def with_page(app: Any, path: str, html: str) -> Any:
    """An ASGI app answering *path* with the page *html*, the rest with *app*."""

    async def asgi(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == path:
            headers = [(b"content-type", b"text/html; charset=utf-8")]
            await send(
                {"type": "http.response.start", "status": 200, "headers": headers}
            )
            await send({"type": "http.response.body", "body": html.encode()})
        else:
            await app(scope, receive, send)

    return asgi


#: A page that drives a chat example's own page (``/?room=browser``, loaded
#: in a same-origin iframe) like a user: it waits for the presence count,
#: sends a message through the form, posts two more with ``fetch``, then
#: opens an EventSource with ``?lastEventId=`` (the id of the second) and
#: expects the third replayed. ``window.verdict`` holds what it saw.
CHAT_CHECK_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>chat check</title></head>
<body><iframe id="chat" src="/?room=browser" width="800" height="600"></iframe>
<script>
const until = (check, what) => new Promise((resolve, reject) => {
  const started = performance.now();
  const tick = () => {
    let value = null;
    try { value = check(); } catch (_) { /* not there yet */ }
    if (value) resolve(value);
    else if (performance.now() - started > 20000) reject(new Error("timeout: " + what));
    else setTimeout(tick, 20);
  };
  tick();
});
const post = async (text) => {
  const response = await fetch("/rooms/browser/messages", {
    method: "POST", body: new URLSearchParams({ user: "page", text }),
  });
  return { status: response.status, ...(await response.json()) };
};
(async () => {
  const doc = () => document.getElementById("chat").contentDocument;
  const messages = () => [...doc().querySelectorAll(".msg")].map((d) => d.textContent);
  const online = await until(
    () => /^\\d+ online$/.test(doc().getElementById("online").textContent)
      && doc().getElementById("online").textContent, "presence");
  doc().getElementById("user").value = "chromium";
  doc().getElementById("text").value = "hello from chromium";
  doc().getElementById("send").requestSubmit();
  await until(() => messages().length >= 1, "own message");
  const second = await post("second");
  const third = await post("third");
  await until(() => messages().length >= 3, "posted messages");
  const replay = await new Promise((resolve, reject) => {
    const source = new EventSource(
      "/rooms/browser/events?lastEventId=" + encodeURIComponent(second.id));
    source.addEventListener("message", (e) => {
      source.close();
      resolve({ data: JSON.parse(e.data), id: e.lastEventId });
    });
    setTimeout(() => reject(new Error("timeout: replay")), 20000);
  });
  window.verdict = { online, messages: messages(), second, third, replay };
})().catch((error) => { window.verdict = { error: String(error) }; });
</script></body></html>
"""
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
