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
import os
import shutil
import socket
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
