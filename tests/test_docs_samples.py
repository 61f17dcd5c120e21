"""Every code sample of README.md and docs/*.md runs as shown.

The ``python`` fences of a page run in order in one namespace (like a
doctest session), with top-level ``await`` allowed, inside ``trio.run`` under
``MockClock(autojump_threshold=0)``. An HTML comment right before a fence
(invisible on the rendered page) changes how it runs:

``<!-- sample-setup`` ... ``-->``
    Python run first, in the page's namespace: the names a fragment assumes.
``<!-- sample: forever -->``
    The block runs until cancelled (a stream, a server): it must still be
    running, without error, after a virtual minute; then it is cancelled.
``<!-- sample: server PATH -->``
    A program: run as ``python FILE`` in a folder holding the page's
    ``file`` samples, on a free port (``trio_sse.serve`` is wrapped so that
    it binds port 0 and reports the URL); the test reads one event from
    PATH with :mod:`trio_sse.client` (``server PATH open``: checks only that
    the stream opens), sends SIGINT and expects a quiet exit with status 0.
``<!-- sample: client -->``
    A client program: run against a server on a free port (``8000`` in the
    sample is replaced by that port) that sends one event and then answers
    204; the program must print the event's data and exit with status 0.
``<!-- sample: file NAME -->``
    Written to NAME (any language) instead of being run; a ``server`` or
    ``pytest`` sample of the same page sees it.
``<!-- sample: pytest -->``
    Written as a test module next to the ``file`` samples and run with
    ``python -m pytest`` there: a reader's test, with the reader's config.
``<!-- sample: skip REASON -->``
    Not run; REASON says why (only for what cannot run on a test machine).
"""

from __future__ import annotations

import ast
import inspect
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio.testing
from helpers import serve_app

import trio_sse
from trio_sse.client import open_event_source

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LIMIT = 60  # seconds, real time, for a subprocess on a busy machine

_FENCE = re.compile(r"^```(\S*)\s*$")
_DIRECTIVE = re.compile(r"^<!-- sample: (\w+)\s*(.*?)\s*-->$")


@dataclass
class Sample:
    page: Path
    line: int
    language: str
    code: str
    mode: str = "run"
    argument: str = ""
    setup: str = ""

    @property
    def name(self) -> str:
        return f"{self.page.name}:{self.line}"


@dataclass
class Page:
    path: Path
    samples: list[Sample] = field(default_factory=list)


def parse(path: Path) -> Page:
    """The samples of one Markdown page, with their directives."""
    page = Page(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    mode, argument, setup = "run", "", ""
    i = 0
    while i < len(lines):
        line = lines[i]
        directive = _DIRECTIVE.match(line)
        if directive:
            mode, argument = directive.group(1), directive.group(2)
        elif line.startswith("<!-- sample-setup"):
            end = lines.index("-->", i)
            setup = "\n".join(lines[i + 1 : end])
            i = end
        elif fence := _FENCE.match(line):
            end = i + 1
            while not lines[end].startswith("```"):
                end += 1
            language = fence.group(1)
            code = "\n".join(lines[i + 1 : end]) + "\n"
            if language in ("python", "py") or mode == "file":
                page.samples.append(
                    Sample(path, i + 1, language, code, mode, argument, setup)
                )
            mode, argument, setup = "run", "", ""
            i = end
        elif line.strip():
            mode, argument, setup = "run", "", ""
        i += 1
    return page


def all_samples() -> Iterator[Any]:
    for path in PAGES:
        page = parse(path)
        for sample in page.samples:
            if sample.mode in ("run", "forever", "file"):
                continue
            yield pytest.param(page, sample, id=sample.name)


def in_process_pages() -> Iterator[Any]:
    for path in PAGES:
        page = parse(path)
        if any(s.mode in ("run", "forever") for s in page.samples):
            yield pytest.param(page, id=path.name)


# -- in-process samples ----------------------------------------------------------


async def run_block(sample: Sample, namespace: dict[str, Any]) -> None:
    """Run one block (top-level await allowed) in *namespace*."""
    flags = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
    for code in (sample.setup, sample.code):
        if not code:
            continue
        compiled = compile(code, sample.name, "exec", flags=flags)
        result = eval(compiled, namespace)
        if inspect.iscoroutine(result):
            await result


async def run_forever(sample: Sample, namespace: dict[str, Any]) -> None:
    """Run a block that must still run after a virtual minute; cancel it then."""
    finished = trio.Event()

    async def forever() -> None:
        await run_block(sample, namespace)
        finished.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(forever)
        await trio.sleep(60)
        assert not finished.is_set(), f"{sample.name} ended early"
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("page", list(in_process_pages()))
def test_page_samples_run_in_order(
    page: Page, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, Any] = {"__name__": "__sample__"}

    async def main() -> None:
        for sample in page.samples:
            if sample.mode == "run":
                with trio.fail_after(600):  # virtual seconds
                    await run_block(sample, namespace)
            elif sample.mode == "forever":
                await run_forever(sample, namespace)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


# -- samples run as programs ---------------------------------------------------------

# Wraps trio_sse.serve so that a sample binds a free port and says which.
PRELUDE = """\
import signal as _signal
import sys as _sys
import trio as _trio
import trio_sse as _trio_sse

_serve = _trio_sse.serve


class _Report:
    def __init__(self, inner):
        self.inner = inner

    def started(self, urls):
        print("SAMPLE-URL", urls[0], file=_sys.stderr, flush=True)
        self.inner.started(urls)


async def _serve_on_a_free_port(
    app, host="127.0.0.1", port=8000, *, task_status=_trio.TASK_STATUS_IGNORED, **kw
):
    await _serve(app, host, 0, task_status=_Report(task_status), **kw)


_trio_sse.serve = _serve_on_a_free_port
_trio_sse._serve.serve = _serve_on_a_free_port  # what trio_sse.run() calls
# Ctrl+C works as in a terminal even when the test runs in the background
# (a non-interactive shell starts background jobs with SIGINT ignored).
_signal.signal(_signal.SIGINT, _signal.default_int_handler)
"""


def environment() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(ROOT), env.get("PYTHONPATH")])
    )
    env["PYTHONUNBUFFERED"] = "1"
    return env


def write_files(page: Page, folder: Path) -> None:
    for sample in page.samples:
        if sample.mode == "file":
            (folder / sample.argument).write_text(sample.code, encoding="utf-8")


async def check_server(sample: Sample, folder: Path) -> None:
    script = folder / "_sample_server.py"
    main = folder / "_sample_main.py"
    main.write_text(sample.setup + "\n" + sample.code, encoding="utf-8")
    script.write_text(
        PRELUDE
        + "\nimport runpy\n"
        + f"runpy.run_path({str(main)!r}, run_name='__main__')\n",
        encoding="utf-8",
    )
    async with trio.open_nursery() as nursery:
        process: trio.Process = await nursery.start(
            partial(
                trio.run_process,
                [sys.executable, str(script)],
                cwd=str(folder),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=environment(),
                check=False,
            )
        )
        assert process.stdout is not None and process.stderr is not None
        stderr = b""
        while b"\n" not in stderr.partition(b"SAMPLE-URL ")[2]:
            chunk = await process.stderr.receive_some()
            assert chunk, f"the server exited early: {stderr.decode()}"
            stderr += chunk
        url = stderr.partition(b"SAMPLE-URL ")[2].split(b"\n")[0].decode()
        path, _, check = sample.argument.partition(" ")
        if check == "open":
            # The stream opens (it may stay quiet until someone publishes).
            async with (
                httpx.AsyncClient() as http,
                http.stream("GET", url + path) as response,
            ):
                assert response.status_code == 200
                assert response.headers["content-type"].startswith("text/event-stream")
        else:
            async with open_event_source(url + path, max_reconnects=0) as source:
                event = await anext(source)
            assert event.data
        process.send_signal(signal.SIGINT)
        while chunk := await process.stderr.receive_some():
            stderr += chunk
        stdout = b""
        while chunk := await process.stdout.receive_some():
            stdout += chunk
        returncode = await process.wait()
    rest = re.sub(rb"SAMPLE-URL [^\n]*\n", b"", stderr).decode()
    assert returncode == 0, rest
    assert rest == "", rest


async def check_client(sample: Sample, folder: Path) -> None:
    requests: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        requests.append(scope["path"])
        if len(requests) > 1:
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        response = trio_sse.SseResponse(
            trio_sse.replay(
                [trio_sse.Event("hello from the server", id="1", retry=0.01)]
            )
        )
        await response(scope, receive, send)

    async with serve_app(app) as url:
        port = url.rsplit(":", 1)[1]
        main = folder / "_sample_client.py"
        main.write_text(sample.code.replace("8000", port), encoding="utf-8")
        result = await trio.run_process(
            [sys.executable, str(main)],
            cwd=str(folder),
            capture_stdout=True,
            capture_stderr=True,
            env=environment(),
            check=False,
        )
    assert result.returncode == 0, result.stderr.decode()
    assert "hello from the server" in result.stdout.decode()


async def check_pytest(sample: Sample, folder: Path) -> None:
    (folder / "test_sample.py").write_text(sample.code, encoding="utf-8")
    result = await trio.run_process(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=str(folder),
        capture_stdout=True,
        capture_stderr=True,
        env=environment(),
        check=False,
    )
    output = result.stdout.decode() + result.stderr.decode()
    assert result.returncode == 0, output
    assert re.search(r"\b[1-9]\d* passed", output), output


@pytest.mark.parametrize(("page", "sample"), list(all_samples()))
async def test_program_sample(page: Page, sample: Sample, tmp_path: Path) -> None:
    write_files(page, tmp_path)
    with trio.fail_after(LIMIT):
        if sample.mode == "server":
            await check_server(sample, tmp_path)
        elif sample.mode == "client":
            await check_client(sample, tmp_path)
        elif sample.mode == "pytest":
            await check_pytest(sample, tmp_path)
        elif sample.mode == "skip":
            assert sample.argument, f"{sample.name}: say why it is skipped"
            pytest.skip(sample.argument)
        else:
            pytest.fail(f"{sample.name}: unknown sample mode {sample.mode!r}")


def test_every_python_fence_is_a_sample() -> None:
    # The parser must not miss a fence: count them independently.
    for path in PAGES:
        text = path.read_text(encoding="utf-8")
        fences = re.findall(r"^```(?:python|py)\s*$", text, flags=re.MULTILINE)
        python = [s for s in parse(path).samples if s.language in ("python", "py")]
        assert len(python) == len(fences), path.name
