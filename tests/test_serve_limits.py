"""serve() at the edge: accept backlog, the file descriptor limit, slow bodies."""

from __future__ import annotations

import errno
import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import hypercorn.config
import pytest
import trio
import trio.testing
from helpers import open_http_stream, serve_app

import trio_sse
from trio_sse import Event, SseConfig, SseResponse
from trio_sse._serve import _PatientListener


def listen_backlog(port: int) -> int:
    """The accept queue size of the socket listening on *port* (``ss``)."""
    out = subprocess.run(
        ["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True, check=True
    ).stdout
    fields = out.split()
    assert fields and fields[0] == "LISTEN", out
    return int(fields[2])  # Send-Q of a listening socket: its backlog


def somaxconn() -> int:
    """The kernel's cap on accept backlogs."""
    return int(Path("/proc/sys/net/core/somaxconn").read_text())


def port_of(url: str) -> int:
    port = urlsplit(url).port
    assert port is not None
    return port


@pytest.mark.skipif(
    shutil.which("ss") is None or not Path("/proc/sys/net/core/somaxconn").exists(),
    reason="needs ss (iproute2) and /proc",
)
@pytest.mark.parametrize(("kwargs", "expected"), [({}, 2048), ({"backlog": 77}, 77)])
async def test_accept_backlog(kwargs: dict[str, Any], expected: int) -> None:
    async with serve_app(hello, **kwargs) as url:
        assert listen_backlog(port_of(url)) == min(expected, somaxconn())


async def hello(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"hello"})


def body_reader(log: list[str]) -> Any:
    """Reads the request body; records ``body <size>`` or ``disconnect``."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                log.append("disconnect")
                return
            size += len(message.get("body", b""))
            if not message.get("more_body"):
                break
        log.append(f"body {size}")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    return app


HEAD = b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 1000\r\n\r\n"


@pytest.mark.parametrize("trickle", [False, True], ids=["silent", "trickle"])
async def test_body_timeout_closes_a_slow_body(trickle: bool) -> None:
    log: list[str] = []
    async with serve_app(body_reader(log), body_timeout=0.5) as url:
        parts = urlsplit(url)
        assert parts.hostname is not None and parts.port is not None
        stream = await trio.open_tcp_stream(parts.hostname, parts.port)
        async with stream, trio.open_nursery() as nursery:
            await stream.send_all(HEAD + b"x" * 10)
            start = trio.current_time()
            if trickle:

                async def dribble() -> None:
                    # One byte every 50 ms: no single read is slow.
                    for _ in range(900):
                        await trio.sleep(0.05)
                        await stream.send_all(b"x")

                nursery.start_soon(dribble)
            with trio.fail_after(5):
                assert await stream.receive_some() == b""  # closed by the server
            elapsed = trio.current_time() - start
            nursery.cancel_scope.cancel()
    assert log == ["disconnect"]
    assert 0.5 <= elapsed < 2


async def test_body_within_the_timeout_is_read() -> None:
    log: list[str] = []
    async with serve_app(body_reader(log), body_timeout=0.5) as url:
        body = b"y" * 100_000
        async with open_http_stream(url, "/", method="POST", body=body) as http:
            with trio.fail_after(5):
                await http.read_to_end()
    assert http.status == 200
    assert log == [f"body {len(body)}"]


async def test_body_timeout_does_not_touch_streams() -> None:
    """A stream outlives body_timeout many times over, keep-alives flowing."""
    config = SseConfig(keep_alive=0.05)

    async def events() -> Any:
        yield Event("first")
        await trio.sleep_forever()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            await SseResponse(events(), config=config)(scope, receive, send)

    async with (
        serve_app(app, body_timeout=0.1) as url,
        open_http_stream(url, "/events") as http,
    ):
        with trio.fail_after(5):
            await http.read_until(b"data: first\n\n")
        start = trio.current_time()
        with trio.fail_after(10):
            # 20 keep-alives take about 1 s: ten times body_timeout.
            await http.read_until(b":", count=len(http.comments()) + 20)
        assert trio.current_time() - start >= 0.1 * 5
        assert not http.eof


class ScriptedListener(trio.abc.Listener[trio.abc.Stream]):
    """Fails with EMFILE or accepts, as *script* says ("x" or "."); then waits
    for :meth:`feed`."""

    def __init__(self, script: str) -> None:
        self.script = list(script)
        self.fed = trio.Event()

    def feed(self, script: str) -> None:
        self.script.extend(script)
        self.fed.set()

    async def accept(self) -> trio.abc.Stream:
        await trio.lowlevel.checkpoint()
        while not self.script:
            self.fed = trio.Event()
            await self.fed.wait()
        if self.script.pop(0) == "x":
            raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))
        return trio.testing.memory_stream_pair()[0]

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


async def test_a_server_at_the_fd_limit_logs_once_per_episode(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    # At the limit, each closed connection lets one accept() through, and the
    # next fails again: one episode, one line, and one more when it is over.
    scripted = ScriptedListener("xxx." * 50)
    listener = _PatientListener(scripted)
    accepted = 0
    caplog.set_level(logging.INFO, logger="trio_sse")

    async def accept_forever() -> None:
        nonlocal accepted
        while True:
            await listener.accept()
            accepted += 1

    async with trio.open_nursery() as nursery:
        nursery.start_soon(accept_forever)
        await trio.sleep(60)
        assert accepted == 50
        # A second episode, later: one line again.
        scripted.feed("xx.")
        await trio.sleep(60)
        nursery.cancel_scope.cancel()
    lines = [r.getMessage() for r in caplog.records if r.name == "trio_sse"]
    assert [line.split(":")[0].split(",")[0] for line in lines] == [
        "cannot accept connections",
        "accepting connections again",
        "cannot accept connections",
        "accepting connections again",
    ]
    assert "after 14.9 s at the limit (150 accept attempts failed)" in lines[1]


async def test_a_busy_event_loop_does_not_end_the_episode(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    # Broadcasting to thousands of streams can hold the loop for seconds, in
    # which no accept() is tried: that is no proof the limit is over.
    scripted = ScriptedListener("xxx")
    listener = _PatientListener(scripted)
    caplog.set_level(logging.INFO, logger="trio_sse")

    async def accept_forever() -> None:
        while True:
            await listener.accept()

    def lines() -> list[str]:
        return [
            r.getMessage().split(",")[0].split(":")[0]
            for r in caplog.records
            if r.name == "trio_sse"
        ]

    async with trio.open_nursery() as nursery:
        nursery.start_soon(accept_forever)
        await trio.sleep(1)  # three failures, then waiting in accept()
        autojump_clock.jump(10)  # as a loop busy for 10 s would
        await trio.sleep(1)
        scripted.feed("x")  # still at the limit
        await trio.sleep(4.9)
        assert lines() == ["cannot accept connections"]
        await trio.sleep(60)
        nursery.cancel_scope.cancel()
    assert lines() == ["cannot accept connections", "accepting connections again"]


SERVER = """
import logging
import resource
import sys

import trio

import trio_sse
from trio_sse import Event, SseConfig, SseResponse
from trio_sse._serve import _PatientListener

_, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (int(sys.argv[1]), hard))


async def events():
    yield Event("hello")
    await trio.sleep_forever()


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    config = SseConfig(keep_alive=None)
    await SseResponse(events(), config=config)(scope, receive, send)


logging.basicConfig(level=logging.INFO, stream=sys.stderr)
trio_sse.run(app, "127.0.0.1", 0)
"""


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX resource limits")
async def test_fd_limit_logs_one_line_and_recovers(tmp_path: Path) -> None:
    script = tmp_path / "server.py"
    script.write_text(SERVER)
    env = dict(os.environ)
    env["PYTHONPATH"] = str(Path(trio_sse.__file__).parents[1])
    limit = 64
    process = await trio.lowlevel.open_process(
        [sys.executable, str(script), str(limit)], stderr=subprocess.PIPE, env=env
    )
    assert process.stderr is not None
    log = b""

    async def read_log_until(pattern: bytes) -> re.Match[bytes]:
        nonlocal log
        while not (found := re.search(pattern, log)):
            chunk = await process.stderr.receive_some()  # type: ignore[union-attr]
            assert chunk, log.decode()
            log += chunk
        return found

    try:
        with trio.fail_after(20):
            url = (await read_log_until(rb"Running on (http://\S+)"))[1].decode()
        async with trio.open_nursery() as nursery:
            streams: list[trio.SocketStream] = []
            parts = urlsplit(url)
            assert parts.hostname is not None and parts.port is not None
            # Twice the limit in open streams: the server runs out of fds.
            with trio.fail_after(20):
                for _ in range(2 * limit):
                    stream = await trio.open_tcp_stream(parts.hostname, parts.port)
                    streams.append(stream)
                    await stream.send_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
                await read_log_until(rb"cannot accept connections: EMFILE")
            # Let it retry a while at the limit: still one line, no traceback.
            with trio.move_on_after(1):
                await read_log_until(rb"Traceback")
            for stream in streams:
                await stream.aclose()
            with trio.fail_after(10):
                await read_log_until(rb"accepting connections again")
            nursery.cancel_scope.cancel()
        # Served again once connections closed.
        async with open_http_stream(url, "/") as http:
            with trio.fail_after(10):
                await http.read_until(b"data: hello\n\n")
        assert http.status == 200
        process.terminate()
        with trio.fail_after(10):
            assert await process.wait() == 0
        while chunk := await process.stderr.receive_some():
            log += chunk
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    text = log.decode()
    print(text)
    assert text.count("cannot accept connections") == 1
    assert "Traceback" not in text


async def test_hypercorn_read_timeout_still_applies() -> None:
    config = hypercorn.config.Config()
    config.read_timeout = 0.3
    config.errorlog = logging.getLogger("hypercorn.error")
    async with serve_app(hello, hypercorn_config=config) as url:
        parts = urlsplit(url)
        assert parts.hostname is not None and parts.port is not None
        stream = await trio.open_tcp_stream(parts.hostname, parts.port)
        async with stream:
            start = trio.current_time()
            with trio.fail_after(3):
                assert await stream.receive_some() == b""
            elapsed = trio.current_time() - start
    assert 0.3 <= elapsed < 2
