"""The Pacer: one timer for the streams that wait for the same moment."""

from __future__ import annotations

import itertools
import math
from typing import Any

import pytest
import trio
import trio.testing

from trio_sse import SseConfig
from trio_sse._driver import StreamDriver
from trio_sse._pacing import PACER_SCOPE_KEY, Pacer, pacer_of


class CountingPacer(Pacer):
    """Counts the timers its keepers set."""

    __slots__ = ("timers",)

    def __init__(self, quantum: float = 0.01) -> None:
        super().__init__(quantum)
        self.timers = 0

    async def _keep(self, index: int, lot: Any, at: float) -> None:
        self.timers += 1
        await super()._keep(index, lot, at)


def moment(deadline: float, quantum: float) -> float:
    return math.ceil(deadline / quantum) * quantum


async def test_tasks_wake_at_the_moment_rounded_up_with_one_timer(
    autojump_clock: trio.testing.MockClock,
) -> None:
    pacer = CountingPacer(0.01)
    start = trio.current_time()
    deadlines = [start + 0.05 + i * 0.0001 for i in range(100)]  # one moment
    deadlines += [start + 0.2 + i * 0.001 for i in range(10)]  # two moments
    woke: dict[float, float] = {}

    async def sleeper(deadline: float) -> None:
        await pacer.sleep_until(deadline)
        woke[deadline] = trio.current_time()

    async with trio.open_nursery() as nursery:
        for deadline in deadlines:
            nursery.start_soon(sleeper, deadline)
    for deadline in deadlines:
        assert deadline <= woke[deadline] <= deadline + 0.01 + 1e-9
        assert woke[deadline] == pytest.approx(moment(deadline, 0.01))
    assert pacer.timers == len({round(moment(d, 0.01), 6) for d in deadlines})
    assert pacer._moments == {}


async def test_a_cancelled_keeper_hands_its_timer_on(
    autojump_clock: trio.testing.MockClock,
) -> None:
    pacer = Pacer(0.01)
    at = moment(trio.current_time() + 0.1, 0.01)
    woke: list[float] = []

    async def sleeper() -> None:
        await pacer.sleep_until(at)
        woke.append(trio.current_time())

    async with trio.open_nursery() as nursery:
        first = trio.CancelScope()

        async def keeper() -> None:
            with first:
                await pacer.sleep_until(at)
            woke.append(-1.0)  # cancelled: never counts as woken

        nursery.start_soon(keeper)
        await trio.testing.wait_all_tasks_blocked()
        for _ in range(5):
            nursery.start_soon(sleeper)
        await trio.testing.wait_all_tasks_blocked()
        await trio.sleep(0.03)
        first.cancel()
    assert woke[0] == -1.0
    assert woke[1:] == [pytest.approx(at)] * 5
    assert pacer._moments == {}


async def test_a_cancelled_parked_task_leaves_the_others_be(
    autojump_clock: trio.testing.MockClock,
) -> None:
    pacer = CountingPacer(0.01)
    at = moment(trio.current_time() + 0.1, 0.01)
    woke: list[float] = []

    async def sleeper(scope: trio.CancelScope) -> None:
        with scope:
            await pacer.sleep_until(at)
            woke.append(trio.current_time())

    scopes = [trio.CancelScope() for _ in range(4)]
    async with trio.open_nursery() as nursery:
        for scope in scopes:
            # One at a time: the first keeps the timer, the others park.
            nursery.start_soon(sleeper, scope)
            await trio.sleep(0.001)
        await trio.sleep(0.02)
        scopes[2].cancel()
    assert woke == [pytest.approx(at)] * 3
    assert pacer.timers == 1


async def test_a_past_deadline_is_a_checkpoint() -> None:
    pacer = Pacer()
    with trio.CancelScope() as scope:
        scope.cancel()
        with pytest.raises(trio.Cancelled):
            await pacer.sleep_until(trio.current_time() - 1)
    await pacer.sleep_until(trio.current_time() - 1)
    assert pacer._moments == {}


def test_quantum_must_be_positive_and_scopes_without_a_pacer() -> None:
    with pytest.raises(ValueError, match="quantum"):
        Pacer(0)
    assert pacer_of({}) is None
    assert pacer_of({PACER_SCOPE_KEY: "not a pacer"}) is None
    pacer = Pacer()
    assert pacer_of({PACER_SCOPE_KEY: pacer}) is pacer


class TimedWriteTransport:
    """Each write takes ``took`` seconds; records when writes begin."""

    def __init__(self, took: float) -> None:
        self.took = took
        self.started: list[float] = []
        self.writes: list[bytes] = []

    async def open(self) -> None:
        pass

    async def write(self, data: bytes) -> None:
        self.started.append(trio.current_time())
        await trio.sleep(self.took)
        self.writes.append(data)

    async def receive(self) -> str | None:
        await trio.sleep_forever()
        raise AssertionError  # pragma: no cover

    async def close(self, end: Any) -> None:
        pass


async def test_streams_that_are_behind_share_the_pacers_timers(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Twenty streams behind the same publisher: their paced writes begin on
    the pacer's moments, with a timer per moment rather than per write."""
    pacer = CountingPacer(0.01)
    config = SseConfig(write_delay=0.05, keep_alive=None)
    channels = [trio.open_memory_channel[Any](1000) for _ in range(20)]
    transports = [TimedWriteTransport(took=0.015) for _ in channels]
    async with trio.open_nursery() as nursery:
        for (_, rx), transport in zip(channels, transports, strict=True):
            driver = StreamDriver(transport, rx, config, pacer=pacer)
            nursery.start_soon(driver.run)
        await trio.testing.wait_all_tasks_blocked()
        for i in range(100):
            for tx, _ in channels:
                tx.send_nowait(f"e{i}")
            await trio.sleep(0.005)
        await trio.sleep(1)
        for tx, _ in channels:
            tx.close()
    for transport in transports:
        body = b"".join(transport.writes)
        assert body.count(b"data: e") == 100
        paced = transport.started[3:]
        assert paced, "the stream never fell behind"
        for when in paced:
            assert when == pytest.approx(moment(when, 0.01))
        gaps = [b - a for a, b in itertools.pairwise(transport.started[2:])]
        assert all(gap >= 0.05 for gap in gaps)
    paced_writes = sum(len(t.started[3:]) for t in transports)
    assert pacer.timers * 5 <= paced_writes
