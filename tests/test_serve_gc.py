"""serve() and the garbage collector: what streams leave behind, ``gc_freeze``."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import AsyncExitStack
from functools import partial
from typing import Any

import pytest
import trio
from helpers import open_http_stream, serve_app, wait_subscribers

import trio_sse
from trio_sse import Broadcaster, ConfigError, Event
from trio_sse._serve import _Connection, _freeze_survivors


@pytest.fixture
def gc_disabled() -> Iterator[None]:
    """No automatic collection: only reference counting frees objects."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


async def hello(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"hello"})


def connections() -> int:
    return sum(type(o) is _Connection for o in gc.get_objects())


async def test_closed_streams_leave_no_reference_cycles(gc_disabled: None) -> None:
    # A cycle would keep a closed connection's objects (the Hypercorn
    # protocol, h11's state, the socket objects) until the collector finds
    # them; without one they go as soon as the connection ends.
    bc: Broadcaster[str, Event] = Broadcaster()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            await bc.response(bc.subscribe("k"))(scope, receive, send)

    async with serve_app(app) as url:
        before = connections()
        async with AsyncExitStack() as stack:
            streams = [
                await stack.enter_async_context(open_http_stream(url, "/"))
                for _ in range(10)
            ]
            await wait_subscribers(bc, "k", 10)
            assert connections() == before + 10
            bc.send("k", Event("x"))
            for stream in streams:
                await stream.read_until(b"data: x")
        await wait_subscribers(bc, "k", 0)
        with trio.fail_after(5):
            while connections() > before:  # noqa: ASYNC110 (no hook to wait on)
                await trio.sleep(0.01)


async def test_gc_freeze_runs_once_startup_is_done(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[str] = []
    monkeypatch.setattr(gc, "collect", lambda *args: calls.append("collect") or 0)
    monkeypatch.setattr(gc, "freeze", lambda: calls.append("freeze"))

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    calls.append("startup")
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return

    async with serve_app(app, gc_freeze=True):
        # Started: the application's startup first, then one collection and
        # one freeze, before serve() reported its addresses.
        assert calls == ["startup", "collect", "freeze"]
    assert calls == ["startup", "collect", "freeze"]

    calls.clear()
    async with serve_app(app):
        assert calls == ["startup"]  # off by default


async def test_gc_freeze_always_freezes_after_every_full_collection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[str] = []
    monkeypatch.setattr(gc, "collect", lambda *args: calls.append("collect") or 0)
    monkeypatch.setattr(gc, "freeze", lambda: calls.append("freeze"))
    async with serve_app(hello, gc_freeze="always"):
        assert calls == ["collect", "freeze"]
        assert _freeze_survivors in gc.callbacks
        # What the collector calls: only the end of a full collection freezes.
        for phase, generation in [("start", 2), ("stop", 0), ("stop", 1)]:
            info = {"generation": generation, "collected": 0, "uncollectable": 0}
            _freeze_survivors(phase, info)
        assert calls == ["collect", "freeze"]
        _freeze_survivors("stop", {"generation": 2, "collected": 3, "uncollectable": 0})
        assert calls == ["collect", "freeze", "freeze"]
    assert _freeze_survivors not in gc.callbacks  # serve() returned: removed


@pytest.mark.parametrize("value", [1, "yes", None])
async def test_bad_gc_freeze(value: object) -> None:
    with pytest.raises(ConfigError, match="gc_freeze must be False, True or 'always'"):
        await trio_sse.serve(hello, gc_freeze=value)  # type: ignore[arg-type]


def test_run_freezes_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    ran: list[Any] = []
    monkeypatch.setattr(trio, "run", ran.append)
    trio_sse.run(object())
    trio_sse.run(object(), gc_freeze=False)
    assert [call.func for call in ran] == [trio_sse.serve, trio_sse.serve]
    assert isinstance(ran[0], partial)
    assert ran[0].keywords["gc_freeze"] is True
    assert ran[0].keywords["handle_signals"] is True
    assert ran[1].keywords["gc_freeze"] is False
