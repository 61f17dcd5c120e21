"""``python -m trio_sse.client``: run in a subprocess against a real server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from helpers import serve_app

import trio_sse
from trio_sse import Event
from trio_sse.client import _build_argument_parser, _run, main

LIMIT = 180  # seconds: only a guard against a hang, never a performance bound
SSE = [(b"content-type", b"text/event-stream; charset=utf-8")]

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "trio_sse.client", *args]


def environment() -> dict[str, str]:
    root = str(Path(trio_sse.__file__).resolve().parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    return env


class App:
    """Sends ``events`` once, ending the stream, then answers 204 (or hangs)."""

    def __init__(self, *events: Event, hang: bool = False, status: int = 200) -> None:
        self.events = events
        self.hang = hang
        self.status = status
        self.requests: list[dict[str, str]] = []

    async def __call__(
        self, scope: dict[str, Any], receive: Receive, send: Send
    ) -> None:
        if scope["type"] != "http":
            return
        self.requests.append(
            {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        )
        if self.status != 200:
            headers = [(b"content-type", b"text/plain")]
            await send(
                {
                    "type": "http.response.start",
                    "status": self.status,
                    "headers": headers,
                }
            )
            await send({"type": "http.response.body", "body": b"no"})
            return
        if len(self.requests) > 1:
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        await send({"type": "http.response.start", "status": 200, "headers": SSE})
        body = b"".join(event.encode() for event in self.events)
        await send({"type": "http.response.body", "body": body, "more_body": True})
        if self.hang:
            while (await receive())["type"] != "http.disconnect":
                pass
        else:
            await send({"type": "http.response.body", "body": b""})


EVENTS = (
    Event(retry=0.01),
    Event("hello", event="greeting", id="1"),
    Event.json({"n": 2, "s": "ünï ✓"}, id="2"),
    Event("two\nlines", id="3"),
)


async def test_json_output_and_exit_on_204() -> None:
    app = App(*EVENTS)
    with trio.fail_after(LIMIT):
        async with serve_app(app) as url:
            result = await trio.run_process(
                command(url, "--json"),
                capture_stdout=True,
                capture_stderr=True,
                env=environment(),
                check=False,
            )
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.isascii()
    lines = [json.loads(line) for line in result.stdout.decode().splitlines()]
    assert lines == [
        {"type": "greeting", "data": "hello", "id": "1", "retry": None},
        {"type": "message", "data": '{"n":2,"s":"ünï ✓"}', "id": "2", "retry": None},
        {"type": "message", "data": "two\nlines", "id": "3", "retry": None},
    ]
    # The reconnection carried the last id.
    assert app.requests[1]["last-event-id"] == "3"


async def test_plain_output_reads_like_the_wire_format() -> None:
    app = App(*EVENTS)
    with trio.fail_after(LIMIT):
        async with serve_app(app) as url:
            result = await trio.run_process(
                command(url), capture_stdout=True, env=environment()
            )
    assert result.stdout.decode("utf-8") == (
        "event: greeting\nid: 1\ndata: hello\n\n"
        'id: 2\ndata: {"n":2,"s":"ünï ✓"}\n\n'
        "id: 3\ndata: two\ndata: lines\n\n"
    )


async def test_headers_and_last_event_id_options() -> None:
    app = App(*EVENTS)
    with trio.fail_after(LIMIT):
        async with serve_app(app) as url:
            await trio.run_process(
                command(
                    url,
                    "--header",
                    "Authorization: Bearer abc",
                    "-H",
                    "X-Trace:1",
                    "--last-event-id",
                    "41",
                ),
                capture_stdout=True,
                env=environment(),
            )
    first = app.requests[0]
    assert first["authorization"] == "Bearer abc"
    assert first["x-trace"] == "1"
    assert first["last-event-id"] == "41"
    assert first["accept"] == "text/event-stream"


async def test_error_status_exits_1_with_a_message() -> None:
    app = App(status=500)
    with trio.fail_after(LIMIT):
        async with serve_app(app) as url:
            result = await trio.run_process(
                command(url + "/feed"),
                capture_stdout=True,
                capture_stderr=True,
                env=environment(),
                check=False,
            )
    assert result.returncode == 1
    stderr = result.stderr.decode()
    assert "HTTP 500" in stderr and url + "/feed" in stderr
    assert "Traceback" not in stderr


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--header", "no colon"], "Name: value"),
        (["--max-reconnects", "-1"], "integer >= 0"),
        (["--timeout", "0"], "seconds > 0"),
    ],
)
def test_bad_options_are_usage_errors(
    option: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["http://127.0.0.1:9/", *option])
    assert info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT is POSIX here")
async def test_ctrl_c_exits_130_without_traceback() -> None:
    app = App(*EVENTS, hang=True)
    with trio.fail_after(LIMIT):
        async with serve_app(app) as url, trio.open_nursery() as nursery:
            process: trio.Process = await nursery.start(
                partial(
                    trio.run_process,
                    command(url, "--json"),
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    env=environment(),
                    check=False,
                )
            )
            assert process.stdout is not None and process.stderr is not None
            output = b""
            while output.count(b"\n") < 3:
                chunk = await process.stdout.receive_some()
                assert chunk, "the client exited early"
                output += chunk
            process.send_signal(signal.SIGINT)
            stderr = b""
            while chunk := await process.stderr.receive_some():
                stderr += chunk
            returncode = await process.wait()
    assert returncode == 130
    assert b"Traceback" not in stderr, stderr.decode()
    assert [json.loads(line)["id"] for line in output.splitlines()] == ["1", "2", "3"]


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT is POSIX here")
async def test_sigint_is_a_cancellation_at_a_checkpoint(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # trio's default SIGINT handling raises KeyboardInterrupt at whatever
    # bytecode runs, possibly inside httpx/httpcore holding a lock, and the
    # shielded close that follows can then hang. The CLI turns SIGINT into a
    # cancellation instead: raising the signal here must not surface as
    # KeyboardInterrupt, and _run returns 130 after a clean close.
    app = App(*EVENTS, hang=True)
    statuses: list[int] = []
    args = _build_argument_parser().parse_args(["--json", "http://unused"])
    with trio.fail_after(LIMIT):
        async with serve_app(app) as url, trio.open_nursery() as nursery:
            args.url = url

            async def client() -> None:
                statuses.append(await _run(args))

            nursery.start_soon(client)
            while not app.requests:
                await trio.testing.wait_all_tasks_blocked()
            await trio.testing.wait_all_tasks_blocked()
            signal.raise_signal(signal.SIGINT)
    assert statuses == [130]
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line)["id"] for line in lines] == ["1", "2", "3"]


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX pipes")
async def test_closed_stdout_exits_quietly() -> None:
    # Like ``python -m trio_sse.client URL | head -1``.
    many = [Event(f"event {n}" + "x" * 1000, id=str(n)) for n in range(200)]
    app = App(*many, hang=True)
    with trio.fail_after(LIMIT):
        async with serve_app(app) as url, trio.open_nursery() as nursery:
            process: trio.Process = await nursery.start(
                partial(
                    trio.run_process,
                    command(url),
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    env=environment(),
                    check=False,
                )
            )
            assert process.stdout is not None and process.stderr is not None
            assert await process.stdout.receive_some()
            await process.stdout.aclose()
            stderr = b""
            while chunk := await process.stderr.receive_some():
                stderr += chunk
            returncode = await process.wait()
    assert returncode == 0, stderr.decode()
    assert stderr == b""
