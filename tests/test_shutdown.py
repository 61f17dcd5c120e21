"""ShutdownSignal: the one-shot signal serve() hands every stream."""

from __future__ import annotations

import trio
import trio.testing

from trio_sse import ShutdownSignal


def test_callbacks_run_once_when_set() -> None:
    signal = ShutdownSignal()
    calls: list[str] = []
    signal.add_callback(lambda: calls.append("a"))
    signal.add_callback(lambda: calls.append("b"))
    assert not signal.is_set()
    assert calls == []
    signal.set()
    signal.set()
    assert signal.is_set()
    assert sorted(calls) == ["a", "b"]


def test_a_removed_callback_does_not_run() -> None:
    signal = ShutdownSignal()
    calls: list[str] = []
    remove = signal.add_callback(lambda: calls.append("gone"))
    remove()
    remove()  # removing twice is harmless
    signal.set()
    assert calls == []


def test_adding_after_set_runs_at_once() -> None:
    signal = ShutdownSignal()
    signal.set()
    calls: list[str] = []
    remove = signal.add_callback(lambda: calls.append("late"))
    assert calls == ["late"]
    remove()


async def test_wait_wakes_when_set() -> None:
    signal = ShutdownSignal()
    woke = trio.Event()

    async def waiter() -> None:
        await signal.wait()
        woke.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        assert not woke.is_set()
        signal.set()
    assert woke.is_set()
