"""serve() writes an HTTP/1.1 stream's body chunks itself, and correctly.

:func:`trio_sse.serve` offers responses a body writer (``scope[
"trio_sse.body_writer"]``) that frames each write as one chunk and sends it
under the connection's send lock, past Hypercorn's per-message layers. These
tests read the bytes on the wire with h11 from raw sockets: the chunked body
parses, a pipelined request after the stream is answered, and the writer is
offered only where h11 frames the body as chunks.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

import h11
import pytest
import trio
from helpers import serve_app

import trio_sse
from trio_sse import Event, EventParser, SseResponse
from trio_sse._asgi import BODY_WRITER_SCOPE_KEY
from trio_sse._pacing import PACER_SCOPE_KEY, Pacer
from trio_sse._response import _HttpTransport
from trio_sse._serve import _ChunkedBody


class App:
    """``/events?n=N&size=S``: N events then the end; ``/plain``: "ok"."""

    def __init__(self) -> None:
        self.scopes: list[dict[str, Any]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        self.scopes.append(scope)
        if scope["path"] == "/plain":
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-length", b"2")],
                }
            )
            await send({"type": "http.response.body", "body": b"ok"})
            return
        query = parse_qs(scope["query_string"].decode())
        n = int(query.get("n", ["3"])[0])
        size = int(query.get("size", ["10"])[0])
        tx, rx = trio.open_memory_channel[Event](n)
        for i in range(n):
            tx.send_nowait(Event(f"{i} " + "x" * size, id=str(i)))
        tx.close()
        await SseResponse(rx)(scope, receive, send)


def expected_events(n: int, size: int) -> list[tuple[str, str]]:
    return [(str(i), f"{i} " + "x" * size) for i in range(n)]


async def exchange(url: str, request: bytes) -> bytes:
    """Send *request* bytes, read until the server closes or goes quiet."""
    host, port = url.removeprefix("http://").split(":")
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        await stream.send_all(request)
        data = bytearray()
        while True:
            with trio.move_on_after(2) as scope:
                chunk = await stream.receive_some()
            if scope.cancelled_caught or not chunk:
                return bytes(data)
            data += chunk


def responses(data: bytes, methods: list[bytes]) -> list[tuple[h11.Response, bytes]]:
    """Parse the responses to *methods* (sent in order) with h11."""
    conn = h11.Connection(h11.CLIENT)
    conn.receive_data(data)
    out: list[tuple[h11.Response, bytes]] = []
    for method in methods:
        conn.send(h11.Request(method=method, target="/", headers=[("host", "x")]))
        conn.send(h11.EndOfMessage())
        head: h11.Response | None = None
        body = bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(b"")  # nothing more came
                continue
            if isinstance(event, h11.Response):
                head = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                break
            else:
                raise AssertionError(f"unexpected {event!r}")
        assert head is not None
        out.append((head, bytes(body)))
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            conn.start_next_cycle()
    return out


def parse_events(body: bytes) -> list[tuple[str, str]]:
    parser = EventParser()
    return [(m.last_event_id, m.data) for m in parser.feed(body)]


@pytest.fixture
def counted_writes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The size of every chunk written by serve()'s body writer."""
    sizes: list[int] = []
    write = _ChunkedBody.write

    async def counting(self: _ChunkedBody, data: bytes) -> bool:
        sizes.append(len(data))
        return await write(self, data)

    monkeypatch.setattr(_ChunkedBody, "write", counting)
    return sizes


async def test_a_stream_body_is_chunked_by_serve_and_parses(
    counted_writes: list[int],
) -> None:
    app = App()
    async with serve_app(app) as url:
        # 60 events, some large enough to need several socket sends.
        data = await exchange(
            url,
            b"GET /events?n=60&size=20000 HTTP/1.1\r\nhost: x\r\n\r\n"
            b"GET /plain HTTP/1.1\r\nhost: x\r\n\r\n",
        )
    (head, body), (plain_head, plain_body) = responses(data, [b"GET", b"GET"])
    assert head.status_code == 200
    assert (b"transfer-encoding", b"chunked") in head.headers
    assert parse_events(body) == expected_events(60, 20000)
    # The pipelined request on the same connection is answered after it.
    assert (plain_head.status_code, plain_body) == (200, b"ok")
    assert isinstance(app.scopes[0][BODY_WRITER_SCOPE_KEY], _ChunkedBody)
    # One pacer per serve() call, shared by its streams.
    assert isinstance(app.scopes[0][PACER_SCOPE_KEY], Pacer)
    assert app.scopes[0][PACER_SCOPE_KEY] is app.scopes[1][PACER_SCOPE_KEY]
    # Every byte of the body went through serve()'s body writer.
    assert counted_writes and sum(counted_writes) == len(body)


async def test_what_the_kernel_does_not_take_at_once_follows_in_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A client that does not read fills the socket: the body writer hands
    the kernel what it takes without waiting, then sends the rest under the
    connection's send lock; the body still parses, every byte in order."""
    sends: list[tuple[int, int]] = []  # (taken at once, frame size)
    full = trio.Event()
    send_now = _ChunkedBody._send_now

    def recording(sock: Any, frame: bytes) -> int:
        sent = send_now(sock, frame)
        sends.append((sent, len(frame)))
        if sent < len(frame):
            full.set()
        return sent

    monkeypatch.setattr(_ChunkedBody, "_send_now", staticmethod(recording))
    n, size = 200, 50_000  # 10 MB: more than the socket buffers hold
    async with serve_app(App()) as url:
        host, port = url.removeprefix("http://").split(":")
        stream = await trio.open_tcp_stream(host, int(port))
        async with stream:
            await stream.send_all(
                f"GET /events?n={n}&size={size} HTTP/1.1\r\nhost: x\r\n"
                "connection: close\r\n\r\n".encode()
            )
            with trio.fail_after(20):
                await full.wait()  # not read yet: the kernel took part of one
                data = bytearray()
                while chunk := await stream.receive_some():
                    data += chunk
    ((head, body),) = responses(bytes(data), [b"GET"])
    assert head.status_code == 200
    assert parse_events(body) == expected_events(n, size)
    assert any(sent == whole for sent, whole in sends)
    assert any(sent < whole for sent, whole in sends)


async def test_http_1_0_and_head_get_no_body_writer(
    counted_writes: list[int],
) -> None:
    app = App()
    async with serve_app(app) as url:
        old = await exchange(url, b"GET /events?n=5 HTTP/1.0\r\n\r\n")
        head = await exchange(url, b"HEAD /events?n=5 HTTP/1.1\r\nhost: x\r\n\r\n")
    assert [BODY_WRITER_SCOPE_KEY in scope for scope in app.scopes] == [False] * 2
    assert counted_writes == []
    # HTTP/1.0: the body runs to the close, not chunked, and parses.
    head_bytes, _, body = old.partition(b"\r\n\r\n")
    assert b"transfer-encoding" not in head_bytes.lower()
    assert parse_events(body) == expected_events(5, 10)
    ((response, head_body),) = responses(head, [b"HEAD"])
    assert response.status_code == 200 and head_body == b""


async def test_a_client_gone_mid_body_ends_the_stream(
    counted_writes: list[int],
) -> None:
    """A write to a closed connection raises; the stream ends (no hang)."""
    ended = trio.Event()
    bc: trio_sse.Broadcaster[str, Event] = trio_sse.Broadcaster(buffer=10_000)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        try:
            await bc.response(bc.subscribe("k"))(scope, receive, send)
        finally:
            ended.set()

    async with serve_app(app) as url:
        host, port = url.removeprefix("http://").split(":")
        stream = await trio.open_tcp_stream(host, int(port))
        await stream.send_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        await stream.receive_some()
        await stream.aclose()
        with trio.fail_after(10):
            while not ended.is_set():
                bc.send("k", Event("x" * 10_000))
                await trio.sleep(0.01)
    assert bc.subscriber_count("k") == 0


@pytest.mark.parametrize(("status", "used"), [(200, True), (299, True), (204, False)])
def test_the_body_writer_is_used_only_for_a_status_with_a_body(
    status: int, used: bool
) -> None:
    class Writer:
        def usable(self) -> bool:
            return True

        async def write(self, data: bytes) -> bool:
            raise AssertionError

    start = {"type": "http.response.start", "status": status, "headers": []}

    async def receive() -> Any:
        raise AssertionError

    async def send(message: Any) -> None:
        raise AssertionError

    transport = _HttpTransport(start, receive, send, Writer())
    assert (transport._body is not None) is used
