"""A client that closes is noticed even when it sent bytes after its request.

Hypercorn's HTTP/1.1 protocol stops reading a connection when bytes follow a
request (a pipelined request, a stray CRLF) until the response ends, so on
its own it would never see the client close an endless stream. These tests
drive real :func:`trio_sse.serve` servers from raw sockets.
"""

from __future__ import annotations

import os
import socket
import struct
import time
from typing import Any
from urllib.parse import urlsplit

import pytest
import trio
import trio.testing
from helpers import BroadcastApp, open_http_stream, serve_app

from trio_sse import SseConfig

REQUEST = b"GET /k HTTP/1.1\r\nhost: x\r\n\r\n"
PIPELINED = b"GET /other HTTP/1.1\r\nhost: x\r\n\r\n"
needs_proc = pytest.mark.skipif(
    not os.path.isdir("/proc/self/fd"), reason="needs /proc"
)


def address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    return parts.hostname, parts.port


async def read_head(stream: trio.SocketStream) -> bytes:
    """Read until the end of the response head."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await stream.receive_some()
        assert chunk, "the server closed before answering"
        data += chunk
    return data


def reset_on_close(stream: trio.SocketStream) -> None:
    """Make closing *stream* send a RST instead of a FIN."""
    stream.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


@pytest.mark.parametrize("keep_alive", [None, 15.0])
@pytest.mark.parametrize(
    ("trailer", "separate"),
    [
        # The control: Hypercorn notices this one by itself.
        pytest.param(b"", False, id="nothing"),
        pytest.param(b"\r\n", False, id="crlf"),
        # Sent after the response began.
        pytest.param(b"\r\n", True, id="crlf-later"),
        pytest.param(PIPELINED, False, id="pipelined"),
        pytest.param(PIPELINED, True, id="pipelined-later"),
    ],
)
@pytest.mark.parametrize("reset", [False, True], ids=["fin", "rst"])
async def test_close_after_trailing_bytes_frees_the_subscription(
    keep_alive: float | None, trailer: bytes, separate: bool, reset: bool
) -> None:
    app = BroadcastApp(SseConfig(keep_alive=keep_alive))
    async with serve_app(app) as url:
        stream = await trio.open_tcp_stream(*address(url))
        async with stream:
            await stream.send_all(REQUEST if separate else REQUEST + trailer)
            with trio.fail_after(5):
                head = await read_head(stream)
            assert head.startswith(b"HTTP/1.1 200")
            assert app.bc.subscriber_count("k") == 1
            if separate:
                await stream.send_all(trailer)
            if reset:
                reset_on_close(stream)
        start = trio.current_time()
        with trio.fail_after(5):
            await app.closed[0].wait()
        elapsed = trio.current_time() - start
        print(f"close -> unsubscribed in {elapsed * 1000:.1f} ms")
        assert elapsed < 2  # "within about a second", on a loaded machine too
        assert app.bc.subscriber_count("k") == 0
        assert app.bc.subscriber_count("other") == 0


async def hello(scope: Any, receive: Any, send: Any) -> None:
    """Answers with the request's path and body length."""
    if scope["type"] != "http":
        return
    size = 0
    while True:
        message = await receive()
        size += len(message.get("body", b""))
        if not message.get("more_body"):
            break
    body = f"{scope['path']} {size}".encode()
    headers = [(b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def test_pipelined_requests_are_all_answered_in_order() -> None:
    async with serve_app(hello) as url:
        stream = await trio.open_tcp_stream(*address(url))
        async with stream:
            requests = [f"GET /{i} HTTP/1.1\r\nhost: x\r\n\r\n" for i in range(20)]
            last = "GET /end HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
            await stream.send_all("".join([*requests, last]).encode())
            data = b""
            with trio.fail_after(5):
                while chunk := await stream.receive_some():
                    data += chunk
    bodies = [part.split(b"\r\n\r\n", 1)[1] for part in data.split(b"HTTP/1.1 ")[1:]]
    assert bodies == [f"/{i} 0".encode() for i in range(20)] + [b"/end 0"]


async def test_large_body_read_slowly_arrives_whole() -> None:
    """A body larger than the read-ahead waits for the app (backpressure)."""
    received: list[int] = []

    async def slow(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        size = 0
        while True:
            # Every task blocked: the server has read ahead all it may.
            await trio.testing.wait_all_tasks_blocked()
            message = await receive()
            size += len(message.get("body", b""))
            if not message.get("more_body"):
                break
        received.append(size)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"%d" % size})

    body = os.urandom(1_000_000)
    async with (
        serve_app(slow) as url,
        open_http_stream(url, "/", method="POST", body=body) as http,
    ):
        with trio.fail_after(10):
            await http.read_to_end()
    assert received == [len(body)]
    assert bytes(http.body) == b"%d" % len(body)


def open_fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


@needs_proc
async def test_pipelined_bytes_attack_keeps_fds_flat() -> None:
    """Request + CRLF, read the head, close: for up to 20 s, fds stay flat."""
    app = BroadcastApp(SseConfig(keep_alive=None))
    connections, concurrency = 2000, 50
    async with serve_app(app) as url:
        host, port = address(url)
        baseline = open_fd_count()
        peak = baseline
        done = 0

        async def attacker(count: int) -> None:
            nonlocal peak, done
            for _ in range(count):
                stream = await trio.open_tcp_stream(host, port)
                async with stream:
                    await stream.send_all(REQUEST + b"\r\n")
                    await read_head(stream)
                peak = max(peak, open_fd_count())
                done += 1

        start = time.monotonic()
        # Bounded in count and in time (a loaded machine gets fewer done).
        with trio.move_on_after(20):
            async with trio.open_nursery() as nursery:
                for _ in range(concurrency):
                    nursery.start_soon(attacker, connections // concurrency)
        rate = done / (time.monotonic() - start)
        with trio.fail_after(5):
            for closed in app.closed:
                await closed.wait()
        # The connections close right after their subscriptions.
        await trio.testing.wait_all_tasks_blocked()
        assert app.bc.subscriber_count("k") == 0
        after = open_fd_count()
        print(
            f"{done} attack connections at {rate:.0f}/s: fds {baseline} -> peak"
            f" {peak} -> {after}"
        )
        assert done >= 300
        assert peak < baseline + 3 * concurrency + 20
        assert after <= baseline + 2


@pytest.mark.parametrize("trailer", [b"\r\n", PIPELINED], ids=["crlf", "pipelined"])
@pytest.mark.parametrize("body", [False, True], ids=["get", "post"])
async def test_close_right_after_the_request_reaches_a_silent_app(
    trailer: bytes, body: bool
) -> None:
    """Request, trailer and close arrive together, and nothing is written.

    Without a write there is no failed write to reveal the close either:
    only reading the socket can (a long-poll that answers nothing yet).
    """
    disconnects: list[str] = []
    done = trio.Event()
    count = 20

    async def silent(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        while (await receive())["type"] != "http.disconnect":
            pass
        disconnects.append(scope["path"])
        if len(disconnects) == count:
            done.set()

    request = REQUEST
    if body:
        request = b"POST /k HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\nhello"
    async with serve_app(silent) as url:
        for _ in range(count):
            stream = await trio.open_tcp_stream(*address(url))
            async with stream:
                await stream.send_all(request + trailer)
        with trio.fail_after(5):
            await done.wait()
    assert disconnects == ["/k"] * count
