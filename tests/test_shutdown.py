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


def test_remove_callback_forgets_an_equal_callback() -> None:
    # A bound method made again is equal to the one added: a caller need not
    # keep the function add_callback returns.
    class Stream:
        def __init__(self) -> None:
            self.stopped = False

        def stop(self) -> None:
            self.stopped = True

    signal = ShutdownSignal()
    gone, kept = Stream(), Stream()
    signal.add_callback(gone.stop)
    signal.add_callback(kept.stop)
    signal.remove_callback(gone.stop)
    signal.remove_callback(gone.stop)  # twice is harmless
    signal.set()
    assert (gone.stopped, kept.stopped) == (False, True)
    signal.remove_callback(kept.stop)  # after it ran: nothing to do


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
