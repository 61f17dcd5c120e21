"""SIGTERM and SIGINT shut a real server process down gracefully."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import h11
import pytest
import trio
import trio.testing
from helpers import open_http_stream

import trio_sse

SERVER = """
import logging
import sys

import trio

import trio_sse
from trio_sse import Event, SseConfig, SseResponse


async def events():
    yield Event("hello")
    await trio.sleep_forever()


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    config = SseConfig(shutdown_retry=1.5, keep_alive=None)
    await SseResponse(events(), config=config)(scope, receive, send)


logging.basicConfig(level=logging.INFO, stream=sys.stderr)
trio_sse.run(app, "127.0.0.1", 0, graceful_timeout=5)
print("returned", flush=True)
"""


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize(
    "signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"]
)
async def test_signal_ends_streams_cleanly_and_exits_0(
    signum: signal.Signals, tmp_path: Path
) -> None:
    script = tmp_path / "server.py"
    script.write_text(SERVER)
    env = dict(os.environ)
    env["PYTHONPATH"] = str(Path(trio_sse.__file__).parents[1])
    process = await trio.lowlevel.open_process(
        [sys.executable, str(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert process.stdout is not None and process.stderr is not None
    try:
        log = b""
        with trio.fail_after(20):
            while not (found := re.search(rb"Running on (http://\S+)", log)):
                chunk = await process.stderr.receive_some()
                assert chunk, log.decode()
                log += chunk
        url = found[1].decode()
        async with open_http_stream(url, "/events") as http:
            with trio.fail_after(10):
                await http.read_until(b"data: hello\n\n")
            process.send_signal(signum)
            start = trio.current_time()
            with trio.fail_after(10):
                await http.read_to_end()
        with trio.fail_after(10):
            returncode = await process.wait()
        elapsed = trio.current_time() - start
        output = await process.stdout.receive_some()
        while chunk := await process.stderr.receive_some():
            log += chunk
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert http.complete, bytes(http.raw)
    assert http.raw.endswith(b"\r\n0\r\n\r\n")
    assert bytes(http.body).endswith(b"data: hello\n\nretry: 1500\n\n")
    assert returncode == 0, log.decode()
    assert output == b"returned\n"
    assert b"Traceback" not in log, log.decode()
    assert f"{signum.name}: shutting down gracefully".encode() in log
    print(f"{signum.name}: exit 0 after {elapsed:.2f} s")
    assert elapsed < 5


def stubborn(started: trio.Event) -> object:
    """A stream that ignores the shutdown signal (it only ends when cancelled)."""

    async def app(scope: dict[str, object], receive: object, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"a", "more_body": True})
        started.set()
        await trio.sleep_forever()

    return app


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
async def test_second_signal_cuts_the_grace_period_short() -> None:
    started = trio.Event()
    returned = trio.Event()

    async def run_server(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        await trio_sse.serve(
            stubborn(started),
            "127.0.0.1",
            0,
            graceful_timeout=60,
            handle_signals=True,
            task_status=task_status,
        )
        returned.set()

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            url = (await nursery.start(run_server))[0]
            async with open_http_stream(url, "/") as http:
                await started.wait()
                os.kill(os.getpid(), signal.SIGTERM)
                # The first signal starts a graceful shutdown that this
                # stream does not honour: the server waits for it.
                await trio.testing.wait_all_tasks_blocked()
                assert not returned.is_set()
                start = trio.current_time()
                os.kill(os.getpid(), signal.SIGTERM)
                await returned.wait()
                assert trio.current_time() - start < 5
                # Cut off, not ended: the stream never honoured the signal.
                with pytest.raises(h11.RemoteProtocolError):
                    await http.read_to_end()
    # serve() returned normally: the nursery was not cancelled.
    assert not nursery.cancel_scope.cancelled_caught
