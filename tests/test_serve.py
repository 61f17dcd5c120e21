"""serve(): Hypercorn's trio worker in the caller's nursery, with raw ASGI apps."""

from __future__ import annotations

import logging
import os
import re
import socket
import ssl
import sys
import time
from functools import partial
from typing import Any

import hypercorn.config
import pytest
import trio
import trio_websocket
import trustme
from helpers import BroadcastApp, open_http_stream, serve_app

import trio_sse
from trio_sse import ShutdownSignal
from trio_sse._serve import SHUTDOWN_SCOPE_KEY, _listen, _user_timeout_ms

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

Scope = dict[str, Any]

HAS_USER_TIMEOUT = hasattr(socket, "TCP_USER_TIMEOUT")


async def hello(scope: Scope, receive: Any, send: Any) -> None:
    """Answers every request with ``hello``; ignores the lifespan."""
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"hello"})


def streaming_app(log: list[str], *, honour_shutdown: bool = True) -> Any:
    """Sends one event, then waits for the server's shutdown event."""

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        headers = [(b"content-type", b"text/event-stream")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send(
            {"type": "http.response.body", "body": b"data: a\n\n", "more_body": True}
        )
        try:
            if honour_shutdown:
                await scope[SHUTDOWN_SCOPE_KEY].wait()
            else:
                await trio.sleep_forever()
        except trio.Cancelled:
            log.append("cancelled")
            raise
        log.append("shutdown seen")
        await send({"type": "http.response.body", "body": b"retry: 1000\n\n"})

    return app


def all_tasks() -> set[trio.lowlevel.Task]:
    """Every task of this run."""
    found: set[trio.lowlevel.Task] = set()
    todo = [trio.lowlevel.current_root_task()]
    while todo:
        task = todo.pop()
        assert task is not None
        found.add(task)
        for nursery in task.child_nurseries:
            todo.extend(nursery.child_tasks)
    return found


async def get(url: str, path: str = "/") -> tuple[int, bytes]:
    async with open_http_stream(url, path) as http:
        with trio.fail_after(5):
            await http.read_to_end()
        assert http.status is not None
        return http.status, bytes(http.body)


async def test_port_zero_returns_a_working_url() -> None:
    async with trio.open_nursery() as nursery:
        urls = await nursery.start(trio_sse.serve, hello, "127.0.0.1", 0)
        assert len(urls) == 1
        match = re.fullmatch(r"http://127\.0\.0\.1:(\d+)", urls[0])
        assert match and int(match[1]) != 0
        assert await get(urls[0]) == (200, b"hello")
        nursery.cancel_scope.cancel()


async def test_ipv6_host() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        socket.socket(socket.AF_INET6).close()
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback")
    async with trio.open_nursery() as nursery:
        urls = await nursery.start(trio_sse.serve, hello, "::1", 0)
        assert re.fullmatch(r"http://\[::1\]:\d+", urls[0])
        port = int(urls[0].rsplit(":", 1)[1])
        stream = await trio.open_tcp_stream("::1", port)
        async with stream:
            await stream.send_all(
                b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
            )
            data = b""
            with trio.fail_after(5):
                while chunk := await stream.receive_some():
                    data += chunk
        assert data.startswith(b"HTTP/1.1 200") and b"\r\nhello\r\n" in data
        nursery.cancel_scope.cancel()


async def test_busy_port_raises() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError):
            await trio_sse.serve(hello, "127.0.0.1", port)


async def test_scopes_carry_one_shutdown_event_per_serve() -> None:
    scopes: list[Scope] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        scopes.append(scope)
        await hello(scope, receive, send)

    async with serve_app(app) as url1, serve_app(app) as url2:
        await get(url1)
        await get(url1)
        await get(url2)
    http = [s for s in scopes if s["type"] == "http"]
    assert len(http) == 3
    events = [s[SHUTDOWN_SCOPE_KEY] for s in http]
    assert all(isinstance(e, ShutdownSignal) for e in events)
    assert events[0] is events[1]
    assert events[0] is not events[2]
    # Set once shutdown began (both servers are stopped by now).
    assert all(e.is_set() for e in events)
    lifespan = [s for s in scopes if s["type"] == "lifespan"]
    assert lifespan and all(SHUTDOWN_SCOPE_KEY not in s for s in lifespan)


async def test_shutdown_event_is_not_set_while_serving() -> None:
    seen: list[bool] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            seen.append(scope[SHUTDOWN_SCOPE_KEY].is_set())
        await hello(scope, receive, send)

    async with serve_app(app) as url:
        await get(url)
    assert seen == [False]


async def test_lifespan_passes_through() -> None:
    log: list[str] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                log.append(message["type"])
                if message["type"] == "lifespan.startup":
                    scope["state"]["greeting"] = b"from lifespan"
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        log.append("request")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": scope["state"]["greeting"]})

    async with serve_app(app) as url:
        assert await get(url) == (200, b"from lifespan")
    assert log == ["lifespan.startup", "request", "lifespan.shutdown"]


async def test_app_returning_from_lifespan_after_startup_is_served() -> None:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await receive()
            await send({"type": "lifespan.startup.complete"})
            return
        await hello(scope, receive, send)

    async with serve_app(app) as url:
        assert await get(url) == (200, b"hello")


def leaves(error: BaseException) -> list[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        return [leaf for sub in error.exceptions for leaf in leaves(sub)]
    return [error]


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
async def test_lifespan_startup_failure_raises_and_closes_the_socket() -> None:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        assert scope["type"] == "lifespan"
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "no database"})

    before = open_fds()
    with pytest.raises(BaseExceptionGroup) as info:
        async with trio.open_nursery() as nursery:
            await nursery.start(trio_sse.serve, app, "127.0.0.1", 0)
    assert "no database" in " ".join(str(e) for e in leaves(info.value))
    assert open_fds() == before


async def test_cancel_shuts_down_gracefully_and_reraises() -> None:
    log: list[str] = []
    before = all_tasks()
    with trio.CancelScope() as outer:
        async with trio.open_nursery() as nursery:
            urls = await nursery.start(
                partial(trio_sse.serve, streaming_app(log), "127.0.0.1", 0)
            )
            async with open_http_stream(urls[0], "/") as http:
                with trio.fail_after(5):
                    await http.read_until(b"data: a\n\n")
                outer.cancel()
                with trio.CancelScope(shield=True), trio.fail_after(5):
                    await http.read_to_end()
    assert outer.cancelled_caught
    assert log == ["shutdown seen"]
    assert http.body == b"data: a\n\nretry: 1000\n\n"
    assert http.raw.endswith(b"\r\n0\r\n\r\n")
    assert http.complete
    assert all_tasks() == before


async def test_graceful_timeout_cancels_what_still_runs() -> None:
    log: list[str] = []
    app = streaming_app(log, honour_shutdown=False)
    async with open_http_stream_server(app, graceful_timeout=0.2) as (url, cancel):  # noqa: SIM117
        async with open_http_stream(url, "/") as http:
            with trio.fail_after(5):
                await http.read_until(b"data: a\n\n")
            start = time.monotonic()
            cancel()
    elapsed = time.monotonic() - start
    assert log == ["cancelled"]
    assert 0.15 < elapsed < 3


def open_http_stream_server(app: Any, **kwargs: Any) -> Any:
    """Like serve_app, yielding (url, cancel) and waiting for serve() on exit."""

    class _Server:
        async def __aenter__(self) -> tuple[str, Any]:
            self._nursery_cm = trio.open_nursery()
            nursery = await self._nursery_cm.__aenter__()
            urls = await nursery.start(
                partial(trio_sse.serve, app, "127.0.0.1", 0, **kwargs)
            )
            return urls[0], nursery.cancel_scope.cancel

        async def __aexit__(self, *exc: object) -> bool | None:
            return await self._nursery_cm.__aexit__(*exc)  # type: ignore[arg-type]

    return _Server()


async def test_hypercorn_stopping_by_itself_returns_normally() -> None:
    config = hypercorn.config.Config()
    config.max_requests = 1
    config.errorlog = logging.getLogger("hypercorn.error")
    async with trio.open_nursery() as nursery:
        done = trio.Event()

        async def run(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
            await trio_sse.serve(
                hello, "127.0.0.1", 0, hypercorn_config=config, task_status=task_status
            )
            done.set()

        urls = await nursery.start(run)
        await get(urls[0])
        assert not done.is_set()
        # Hypercorn stops once more than ``max_requests`` came in.
        await get(urls[0])
        with trio.fail_after(5):
            await done.wait()


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
async def test_cancel_during_startup_does_not_hang_or_leak() -> None:
    entered = trio.Event()

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await receive()
        entered.set()
        await trio.sleep_forever()

    before = open_fds()
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(partial(trio_sse.serve, app, "127.0.0.1", 0))
            await entered.wait()
            nursery.cancel_scope.cancel()
    assert open_fds() == before


async def test_hypercorn_config_is_copied_and_used() -> None:
    config = hypercorn.config.Config()
    config.bind = ["10.0.0.1:1"]
    config.include_server_header = False
    config.errorlog = logging.getLogger("hypercorn.error")
    async with serve_app(hello, hypercorn_config=config, graceful_timeout=1.0) as url:
        async with open_http_stream(url) as http:
            with trio.fail_after(5):
                await http.read_to_end()
        assert "server" not in http.headers
    assert config.bind == ["10.0.0.1:1"]
    assert config.graceful_timeout == 3.0


async def test_default_logging_touches_no_global_logger(
    caplog: pytest.LogCaptureFixture,
) -> None:
    error_handlers = list(logging.getLogger("hypercorn.error").handlers)
    access_handlers = list(logging.getLogger("hypercorn.access").handlers)
    caplog.set_level(logging.INFO)
    async with serve_app(hello) as url:
        await get(url)
    assert logging.getLogger("hypercorn.error").handlers == error_handlers
    assert logging.getLogger("hypercorn.access").handlers == access_handlers
    assert not [r for r in caplog.records if r.name == "hypercorn.access"]
    assert any("Running on http://127.0.0.1:" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("write_timeout", "expected"),
    [
        (None, None),
        (0, None),
        (0.0004, 1),
        (1.5, 1500),
        (30.0, 30000),
        (1e12, 2**31 - 1),
    ],
)
def test_user_timeout_ms(write_timeout: float | None, expected: int | None) -> None:
    assert _user_timeout_ms(write_timeout) == expected


@pytest.mark.skipif(not HAS_USER_TIMEOUT, reason="TCP_USER_TIMEOUT is Linux only")
@pytest.mark.parametrize(("write_timeout", "expected"), [(1.5, 1500), (None, 0)])
async def test_accepted_sockets_inherit_tcp_user_timeout(
    write_timeout: float | None, expected: int
) -> None:
    with await _listen("127.0.0.1", 0, write_timeout, 10) as listener:
        listener.setblocking(True)
        assert listener.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR)
        with socket.create_connection(listener.getsockname()):
            accepted, _ = listener.accept()
            with accepted:
                got = accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT)
                assert got == expected
                assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)


def firehose(disconnected: dict[str, float]) -> Any:
    """Streams 2 kB events every 5 ms; records when each path disconnects."""
    chunk = b"data: " + b"x" * 2000 + b"\n\n"

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        name = scope["path"]
        await send({"type": "http.response.start", "status": 200, "headers": []})
        async with trio.open_nursery() as nursery:

            async def watch() -> None:
                while (await receive())["type"] != "http.disconnect":
                    pass
                disconnected[name] = time.monotonic()
                nursery.cancel_scope.cancel()

            nursery.start_soon(watch)
            while True:
                await send(
                    {"type": "http.response.body", "body": chunk, "more_body": True}
                )
                await trio.sleep(0.005)

    return app


@pytest.mark.skipif(not HAS_USER_TIMEOUT, reason="TCP_USER_TIMEOUT is Linux only")
async def test_client_that_stops_reading_is_dropped_by_the_kernel() -> None:
    """A non-reader's connection is aborted; the app gets ``http.disconnect``."""
    disconnected: dict[str, float] = {}
    app = firehose(disconnected)
    config = trio_sse.SseConfig(write_timeout=0.5)
    async with serve_app(app, config=config) as url:  # noqa: SIM117
        async with open_http_stream(url, "/reader") as reader:
            async with open_http_stream(url, "/stalled", rcvbuf=4096):
                start = time.monotonic()
                with trio.fail_after(10):
                    while "/stalled" not in disconnected:
                        await reader.receive_some()
                elapsed = disconnected["/stalled"] - start
                print(f"non-reader dropped after {elapsed:.2f} s (write_timeout 0.5 s)")
                assert 0.5 <= elapsed < 5
                assert "/reader" not in disconnected
                received = len(reader.body)
                with trio.fail_after(5):
                    more = reader.body.count(b"\n\n") + 10
                    await reader.read_until(b"\n\n", count=more)
                assert len(reader.body) > received


async def test_without_write_timeout_a_non_reader_stays_connected() -> None:
    """The control for the test above: the socket option is what drops it."""
    disconnected: dict[str, float] = {}
    config = trio_sse.SseConfig(write_timeout=None)
    async with serve_app(firehose(disconnected), config=config) as url:  # noqa: SIM117
        async with open_http_stream(url, "/reader") as reader:
            async with open_http_stream(url, "/stalled", rcvbuf=4096):
                with trio.move_on_after(1.5):
                    while True:
                        await reader.receive_some()
                assert disconnected == {}


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
async def test_serving_and_stopping_closes_every_socket() -> None:
    before = open_fds()
    async with serve_app(hello) as url:
        assert await get(url) == (200, b"hello")
        assert len(open_fds() - before) >= 1  # the listening socket
    assert open_fds() == before


@pytest.fixture
def tls_files(tmp_path: Any) -> tuple[trustme.CA, str]:
    """A CA and the path of a key + certificate for 127.0.0.1 it issued."""
    ca = trustme.CA()
    path = str(tmp_path / "server.pem")
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(path)
    return ca, path


async def test_tls_serves_https_and_notices_a_close_after_trailing_bytes(
    tls_files: tuple[trustme.CA, str],
) -> None:
    ca, pem = tls_files
    config = hypercorn.config.Config()
    config.certfile = config.keyfile = pem
    config.errorlog = logging.getLogger("hypercorn.error")
    app = BroadcastApp(trio_sse.SseConfig(keep_alive=None))
    context = ssl.create_default_context()
    ca.configure_trust(context)
    async with serve_app(app, hypercorn_config=config) as url:
        assert url.startswith("https://127.0.0.1:")
        port = int(url.rsplit(":", 1)[1])
        stream = await trio.open_ssl_over_tcp_stream(
            "127.0.0.1", port, ssl_context=context
        )
        async with stream:
            await stream.send_all(b"GET /k HTTP/1.1\r\nhost: x\r\n\r\n\r\n")
            head = b""
            with trio.fail_after(5):
                while b"\r\n\r\n" not in head:
                    head += await stream.receive_some()
            assert head.startswith(b"HTTP/1.1 200")
        with trio.fail_after(2):
            await app.closed[0].wait()
        assert app.bc.subscriber_count("k") == 0


async def test_websocket_round_trip_and_close() -> None:
    """WebSocket upgrades go through serve()'s connections unchanged."""
    closed: list[int] = []
    disconnected = trio.Event()

    async def echo(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            return
        assert isinstance(scope[SHUTDOWN_SCOPE_KEY], ShutdownSignal)
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                closed.append(message["code"])
                disconnected.set()
                return
            await send({"type": "websocket.send", "text": message["text"] * 2})

    async with serve_app(echo) as url:
        port = int(url.rsplit(":", 1)[1])
        async with trio_websocket.open_websocket(
            "127.0.0.1", port, "/", use_ssl=False
        ) as ws:
            for text in ["a", "bc", "x" * 100_000]:
                await ws.send_message(text)
                with trio.fail_after(5):
                    assert await ws.get_message() == text * 2
        with trio.fail_after(5):
            await disconnected.wait()
    # Hypercorn 0.18 reports 1006 here, with or without serve()'s connections.
    assert len(closed) == 1
