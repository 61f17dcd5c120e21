"""The stream driver: its transition table, then its life under MockClock.

The driver runs over a fake transport that records writes and can hold a
write (a client that stops reading) or report the client gone. Every
scenario asserts the states the driver went through and why it ended.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import pytest
import trio
import trio.testing

from trio_sse import Broadcaster, Event, EventParser, LagPolicy, SseConfig
from trio_sse._driver import (
    TRANSITIONS,
    End,
    Sender,
    State,
    StreamDriver,
    Trigger,
)
from trio_sse._shutdown import ShutdownSignal

S, T = State, Trigger

# -- the table ---------------------------------------------------------------------

EXPECTED: list[tuple[State, Trigger, State, End | None]] = [
    (S.OPENING, T.OPENED, S.WAITING, None),
    (S.OPENING, T.STOP, S.STOPPING, None),
    (S.OPENING, T.DISCONNECT, S.CLOSED, End.DISCONNECTED),
    (S.OPENING, T.STALL, S.CLOSED, End.TIMED_OUT),
    (S.OPENING, T.FAIL, S.CLOSED, End.FAILED),
    (S.WAITING, T.WRITE, S.SENDING, None),
    (S.WAITING, T.SOURCE_ENDED, S.CLOSED, End.ENDED),
    (S.WAITING, T.STOP, S.STOPPING, None),
    (S.WAITING, T.DISCONNECT, S.CLOSED, End.DISCONNECTED),
    (S.WAITING, T.FAIL, S.CLOSED, End.FAILED),
    (S.SENDING, T.WROTE, S.WAITING, None),
    (S.SENDING, T.STOP, S.STOPPING, None),
    (S.SENDING, T.DISCONNECT, S.CLOSED, End.DISCONNECTED),
    (S.SENDING, T.STALL, S.CLOSED, End.TIMED_OUT),
    (S.SENDING, T.FAIL, S.CLOSED, End.FAILED),
    (S.STOPPING, T.OPENED, S.STOPPING, None),
    (S.STOPPING, T.WROTE, S.STOPPING, None),
    (S.STOPPING, T.STOP, S.STOPPING, None),
    (S.STOPPING, T.FINAL_WRITE, S.DRAINING, None),
    (S.STOPPING, T.DISCONNECT, S.CLOSED, End.DISCONNECTED),
    (S.STOPPING, T.STALL, S.CLOSED, End.TIMED_OUT),
    (S.STOPPING, T.FAIL, S.CLOSED, End.FAILED),
    (S.DRAINING, T.WROTE, S.CLOSED, End.SHUTDOWN),
    (S.DRAINING, T.STOP, S.DRAINING, None),
    (S.DRAINING, T.DISCONNECT, S.CLOSED, End.DISCONNECTED),
    (S.DRAINING, T.STALL, S.CLOSED, End.TIMED_OUT),
    (S.DRAINING, T.FAIL, S.CLOSED, End.FAILED),
]


class NullTransport:
    async def open(self) -> None:
        raise AssertionError("not used")  # pragma: no cover

    async def write(self, data: bytes) -> None:
        raise AssertionError("not used")  # pragma: no cover

    async def receive(self) -> str | None:
        raise AssertionError("not used")  # pragma: no cover

    async def close(self, end: End) -> None:
        raise AssertionError("not used")  # pragma: no cover


def test_the_table_is_exactly_the_expected_one() -> None:
    table = {(s, t): new for s, row in TRANSITIONS.items() for t, new in row.items()}
    assert table == {(s, t): new for s, t, new, _ in EXPECTED}
    assert set(TRANSITIONS) == set(State)
    assert TRANSITIONS[S.CLOSED] == {}


@pytest.mark.parametrize(("state", "trigger", "new", "end"), EXPECTED)
def test_each_transition(
    state: State, trigger: Trigger, new: State, end: End | None
) -> None:
    driver = StreamDriver(NullTransport(), None, SseConfig())
    driver.state = state
    # SOURCE_ENDED carries the source's reason, WROTE in DRAINING the stop's.
    reason = End.ENDED if trigger is T.SOURCE_ENDED else End.SHUTDOWN
    assert (
        driver.fire(trigger, reason if trigger in (T.SOURCE_ENDED, T.WROTE) else None)
        is new
    )
    assert driver.state is new
    assert driver.end is end


@pytest.mark.parametrize("state", [s for s in State if s is not S.CLOSED])
def test_a_trigger_that_cannot_happen_is_a_bug(state: State) -> None:
    driver = StreamDriver(NullTransport(), None, SseConfig())
    impossible = [t for t in Trigger if t not in TRANSITIONS[state]]
    assert impossible
    for trigger in impossible:
        driver.state = state
        with pytest.raises(RuntimeError, match=f"{trigger.name} cannot happen"):
            driver.fire(trigger)


def test_a_closed_stream_ignores_every_trigger() -> None:
    driver = StreamDriver(NullTransport(), None, SseConfig())
    driver.fire(T.DISCONNECT)
    for trigger in Trigger:
        assert driver.fire(trigger) is S.CLOSED
    assert driver.end is End.DISCONNECTED


# -- the driver's life -------------------------------------------------------------


class FakeTransport:
    """Records writes; ``hold`` makes writes block until released."""

    def __init__(self) -> None:
        self.opened = False
        self.writes: list[bytes] = []
        self.closed_with: End | None = None
        self.hold = False
        self.release = trio.Event()
        self.writing = trio.Event()
        self.incoming_tx, self.incoming_rx = trio.open_memory_channel[str | None](10)

    async def open(self) -> None:
        self.opened = True
        await trio.lowlevel.checkpoint()

    async def write(self, data: bytes) -> None:
        if self.hold:
            self.writing.set()
            # As Hypercorn's trio worker writes: shielded from cancellation.
            with trio.CancelScope(shield=True):
                await self.release.wait()
        else:
            await trio.lowlevel.checkpoint()
        self.writes.append(data)

    async def receive(self) -> str | None:
        return await self.incoming_rx.receive()

    async def close(self, end: End) -> None:
        self.closed_with = end
        await trio.lowlevel.checkpoint()

    def events(self) -> list[Any]:
        return EventParser().feed(b"".join(self.writes))


class TracingDriver(StreamDriver):
    __slots__ = ("trace",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.trace: list[State] = [self.state]

    def fire(self, trigger: Trigger, end: End | None = None) -> State:
        new = super().fire(trigger, end)
        if new is not self.trace[-1]:
            self.trace.append(new)
        return new


def run_driver(
    nursery: trio.Nursery,
    source: object,
    config: SseConfig | None = None,
    **kwargs: Any,
) -> tuple[TracingDriver, FakeTransport, trio.Event]:
    transport = FakeTransport()
    driver = TracingDriver(transport, source, config or SseConfig(), **kwargs)
    done = trio.Event()

    async def run() -> None:
        try:
            await driver.run()
        finally:
            done.set()

    nursery.start_soon(run)
    return driver, transport, done


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


async def test_events_then_the_end(autojump_clock: trio.testing.MockClock) -> None:
    tx, rx = trio.open_memory_channel[Any](10)
    async with trio.open_nursery() as nursery:
        driver, transport, done = run_driver(nursery, rx)
        await trio.testing.wait_all_tasks_blocked()
        assert driver.state is S.WAITING
        tx.send_nowait(Event("one"))
        tx.send_nowait("two")
        await trio.testing.wait_all_tasks_blocked()
        await tx.aclose()
        await done.wait()
    assert [e.data for e in transport.events()] == ["one", "two"]
    assert driver.trace == [S.OPENING, S.WAITING, S.SENDING, S.WAITING, S.SENDING,
                            S.WAITING, S.CLOSED]  # fmt: skip
    assert driver.end is End.ENDED and transport.closed_with is End.ENDED


async def test_ready_events_go_out_in_one_write(
    autojump_clock: trio.testing.MockClock,
) -> None:
    tx, rx = trio.open_memory_channel[Any](100)
    for i in range(50):
        tx.send_nowait(Event(f"e{i}"))
    tx.close()
    async with trio.open_nursery() as nursery:
        _driver, transport, done = run_driver(nursery, rx)
        await done.wait()
    # The opening comment and the 50 events: one write.
    assert len(transport.writes) == 1
    assert len(transport.events()) == 50


async def test_keep_alive_exactly_on_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    tx, rx = trio.open_memory_channel[Any](10)
    async with trio.open_nursery() as nursery:
        driver, transport, _done = run_driver(nursery, rx, SseConfig(keep_alive=5))
        start = trio.current_time()
        await trio.sleep(4.9)
        assert transport.writes == [b":\n"]
        await trio.sleep(0.2)
        assert transport.writes == [b":\n", b":\n"]
        await tx.send("x")  # an event restarts the timer
        await trio.sleep(4.9)
        assert len(transport.writes) == 3
        await trio.sleep(0.2)
        assert transport.writes[-1] == b":\n"
        assert trio.current_time() - start == pytest.approx(10.2)
        tx.close()
    assert driver.end is End.ENDED


async def test_a_stalled_write_times_out_and_says_so(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "trio_sse")
    bc: Broadcaster[str, Event] = Broadcaster()
    stream = bc.subscribe("k")
    async with trio.open_nursery() as nursery:
        driver, transport, done = run_driver(
            nursery, stream, SseConfig(write_timeout=3, keep_alive=None)
        )
        await trio.testing.wait_all_tasks_blocked()
        transport.hold = True
        bc.send("k", Event("stuck"))
        await transport.writing.wait()
        start = trio.current_time()
        await trio.sleep(2.9)
        assert driver.state is S.SENDING
        await trio.sleep(0.2)
        # Ended and unsubscribed on time, though the write is still stuck.
        assert driver.state is S.CLOSED and driver.end is End.TIMED_OUT
        assert trio.current_time() - start <= 3.1
        assert bc.subscriber_count("k") == 0
        assert any("did not read for 3" in r.getMessage() for r in caplog.records)
        transport.release.set()
        await done.wait()
    assert driver.trace[-2:] == [S.SENDING, S.CLOSED]


async def test_shutdown_while_waiting_writes_the_final_retry(
    autojump_clock: trio.testing.MockClock,
) -> None:
    _tx, rx = trio.open_memory_channel[Any](10)
    signal = ShutdownSignal()
    async with trio.open_nursery() as nursery:
        driver, transport, done = run_driver(
            nursery, rx, SseConfig(shutdown_retry=2), shutdown=signal
        )
        await trio.testing.wait_all_tasks_blocked()
        signal.set()
        await done.wait()
    assert transport.writes[-1] == b"retry: 2000\n\n"
    assert driver.trace[-3:] == [S.STOPPING, S.DRAINING, S.CLOSED]
    assert driver.end is End.SHUTDOWN and transport.closed_with is End.SHUTDOWN


async def test_shutdown_during_a_write_lets_it_finish_then_drains(
    autojump_clock: trio.testing.MockClock,
) -> None:
    tx, rx = trio.open_memory_channel[Any](10)
    signal = trio.Event()  # a plain trio.Event works too
    async with trio.open_nursery() as nursery:
        driver, transport, done = run_driver(
            nursery, rx, SseConfig(shutdown_retry=1), shutdown=signal
        )
        await trio.testing.wait_all_tasks_blocked()
        transport.hold = True
        await tx.send("in flight")
        await transport.writing.wait()
        signal.set()
        await trio.testing.wait_all_tasks_blocked()
        assert driver.state is S.STOPPING
        transport.hold = False
        transport.release.set()
        await done.wait()
    assert [e.data for e in transport.events()] == ["in flight"]
    assert transport.writes[-1] == b"retry: 1000\n\n"
    assert driver.trace[-4:] == [S.SENDING, S.STOPPING, S.DRAINING, S.CLOSED]


async def test_disconnect_ends_and_closes_the_source(
    autojump_clock: trio.testing.MockClock,
) -> None:
    bc: Broadcaster[str, Event] = Broadcaster()
    stream = bc.subscribe("k")
    async with trio.open_nursery() as nursery:
        driver, transport, done = run_driver(nursery, stream)
        await trio.testing.wait_all_tasks_blocked()
        await transport.incoming_tx.send(None)
        await done.wait()
    assert driver.end is End.DISCONNECTED
    assert stream.closed and bc.subscriber_count("k") == 0


async def test_lag_without_policy_ends_with_lagged(
    autojump_clock: trio.testing.MockClock,
) -> None:
    bc: Broadcaster[str, str] = Broadcaster(buffer=2)
    stream = bc.subscribe("k")
    for i in range(5):
        bc.send("k", f"e{i}")
    async with trio.open_nursery() as nursery:
        driver, _, done = run_driver(nursery, stream)
        await done.wait()
    assert driver.end is End.LAGGED


async def test_lag_policy_end_writes_what_was_held(
    autojump_clock: trio.testing.MockClock,
) -> None:
    bc: Broadcaster[str, str] = Broadcaster(buffer=2)
    stream = bc.subscribe("k").on_lag(LagPolicy.END)
    for i in range(5):
        bc.send("k", f"e{i}")
    async with trio.open_nursery() as nursery:
        driver, transport, done = run_driver(nursery, stream)
        await done.wait()
    assert [e.data for e in transport.events()] == ["e0", "e1"]
    assert driver.end is End.ENDED


async def test_a_failing_source_ends_with_failed(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken() -> AsyncIterator[str]:
        yield "before"
        raise KeyError("boom")

    async with trio.open_nursery() as nursery:
        driver, transport, done = run_driver(nursery, broken())
        await done.wait()
    assert [e.data for e in transport.events()] == ["before"]
    assert driver.end is End.FAILED
    assert any(
        r.exc_info and isinstance(r.exc_info[1], KeyError) for r in caplog.records
    )


async def test_a_failing_message_handler_ends_with_failed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    got: list[str] = []

    async def on_message(text: str) -> None:
        got.append(text)
        if text == "bad":
            raise ValueError(text)

    _tx, rx = trio.open_memory_channel[Any](10)
    async with trio.open_nursery() as nursery:
        driver, transport, done = run_driver(nursery, rx, on_message=on_message)
        await transport.incoming_tx.send("hello")
        await transport.incoming_tx.send("bad")
        await done.wait()
    assert got == ["hello", "bad"]
    assert driver.end is End.FAILED and transport.closed_with is End.FAILED


async def test_channel_function_runs_in_the_stream(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def fn(tx: Sender) -> None:
        for i in range(3):
            await tx.send(Event(f"n{i}"))
            await trio.sleep(1)

    async with trio.open_nursery() as nursery:
        driver, transport, done = run_driver(nursery, None, function=fn)
        await done.wait()
    assert [e.data for e in transport.events()] == ["n0", "n1", "n2"]
    assert driver.end is End.ENDED


# -- every kind of source -----------------------------------------------------------


def memory_channel() -> tuple[Any, Callable[[], Any]]:
    tx, rx = trio.open_memory_channel[Any](10)
    for item in ("a", "b", "c"):
        tx.send_nowait(item)
    tx.close()
    return rx, lambda: None


def safe_channel() -> tuple[Any, Callable[[], Any]]:
    @trio.as_safe_channel
    async def letters() -> AsyncIterator[str]:
        for item in ("a", "b", "c"):
            yield item

    manager = letters()
    return manager, lambda: None


def generator() -> tuple[Any, Callable[[], Any]]:
    async def letters() -> AsyncIterator[str]:
        for item in ("a", "b", "c"):
            yield item

    return letters(), lambda: None


def anyio_stream() -> tuple[Any, Callable[[], Any]]:
    send, receive = anyio.create_memory_object_stream[str](10)
    for item in ("a", "b", "c"):
        send.send_nowait(item)
    send.close()
    return receive, receive.close


def broadcast_stream() -> tuple[Any, Callable[[], Any]]:
    bc: Broadcaster[str, str] = Broadcaster(history=5)
    probe = bc.subscribe("k")
    for item in ("x", "a", "b", "c"):
        bc.send("k", item)
    probe.receive_nowait()
    stream = bc.subscribe("k", last_event_id=probe.last_id).on_lag(LagPolicy.END)
    probe.close()
    bc.remove("k")
    return stream, lambda: None


@pytest.mark.parametrize(
    "make", [memory_channel, safe_channel, generator, anyio_stream, broadcast_stream]
)
async def test_every_kind_of_source_streams(
    make: Callable[[], tuple[Any, Callable[[], Any]]],
) -> None:
    source, cleanup = make()
    with trio.fail_after(5):
        if make is safe_channel:
            async with source as channel, trio.open_nursery() as nursery:
                driver, transport, done = run_driver(nursery, channel)
                await done.wait()
        else:
            async with trio.open_nursery() as nursery:
                driver, transport, done = run_driver(nursery, source)
                await done.wait()
    cleanup()
    assert [e.data for e in transport.events()] == ["a", "b", "c"]
    assert driver.end is End.ENDED


# -- batching under load (write_delay) ------------------------------------------------


async def test_idle_loop_writes_each_event_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    tx, rx = trio.open_memory_channel[Any](10)
    async with trio.open_nursery() as nursery:
        _, transport, _ = run_driver(nursery, rx, SseConfig(write_delay=1.0))
        await trio.testing.wait_all_tasks_blocked()
        start = trio.current_time()
        for name in ("a", "b", "c"):
            await tx.send(name)
            await trio.testing.wait_all_tasks_blocked()
        # Three writes, no time passed: nothing was held back.
        assert [e.data for e in transport.events()] == ["a", "b", "c"]
        assert len(transport.writes) == 4  # with the opening comment
        assert trio.current_time() == start
        tx.close()


class SlowWriteTransport(FakeTransport):
    """Each write takes three checkpoints, as Hypercorn's trio worker's does."""

    async def write(self, data: bytes) -> None:
        for _ in range(3):
            await trio.lowlevel.checkpoint()
        self.writes.append(data)
        self.times.append(trio.current_time())

    times: list[float]


@pytest.mark.parametrize("delay", [0, 0.5])
async def test_a_stream_that_is_behind_gathers_events_into_one_write(
    autojump_clock: trio.testing.MockClock, delay: float
) -> None:
    tx, rx = trio.open_memory_channel[Any](100)
    transport = SlowWriteTransport()
    transport.times = []
    driver = StreamDriver(transport, rx, SseConfig(write_delay=delay))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(driver.run)
        await trio.testing.wait_all_tasks_blocked()
        start = trio.current_time()
        # A publisher fed by a socket: a checkpoint between two events.
        for i in range(30):
            await tx.send(f"e{i}")
            await trio.lowlevel.checkpoint()
        await trio.sleep(1)
        assert [e.data for e in transport.events()] == [f"e{i}" for i in range(30)]
        writes = [w.count(b"data:") for w in transport.writes if b"data:" in w]
        if delay:
            # Behind for two writes in a row, then one write for the rest,
            # write_delay later.
            assert len(writes) <= 4 and writes[-1] >= 20
            assert transport.times[-1] - start == pytest.approx(delay)
        else:
            assert len(writes) >= 10
            assert transport.times[-1] == start
        # Then the stream keeps up again: the next event goes out at once.
        before = len(transport.writes)
        now = trio.current_time()
        await tx.send("late")
        await trio.testing.wait_all_tasks_blocked()
        assert len(transport.writes) == before + 1
        assert trio.current_time() == now
        tx.close()


class InstantWriteTransport(FakeTransport):
    """Writes as serve()'s body writer does when the kernel takes the bytes
    at once: no checkpoint, and says so."""

    async def write(self, data: bytes) -> bool:
        self.writes.append(data)
        self.times.append(trio.current_time())
        return False

    times: list[float]


async def test_writes_that_are_no_checkpoint_still_let_the_others_run(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The driver checkpoints after each write itself: a source that is
    always ready cannot starve the other tasks."""
    tx, rx = trio.open_memory_channel[Any](300)
    for i in range(200):
        tx.send_nowait(f"e{i}")
    tx.close()
    transport = InstantWriteTransport()
    transport.times = []
    # One event per write, no pacing: 201 writes back to back.
    driver = StreamDriver(transport, rx, SseConfig(coalesce_bytes=1, write_delay=0))
    turns = 0
    done = trio.Event()

    async def other_task() -> None:
        nonlocal turns
        while not done.is_set():
            turns += 1
            await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(other_task)
        await driver.run()
        done.set()
    assert [e.data for e in transport.events()] == [f"e{i}" for i in range(200)]
    assert len(transport.writes) == 201
    assert turns >= 200


async def test_a_stream_behind_gathers_events_when_writes_are_no_checkpoint(
    autojump_clock: trio.testing.MockClock,
) -> None:
    tx, rx = trio.open_memory_channel[Any](100)
    transport = InstantWriteTransport()
    transport.times = []
    driver = StreamDriver(transport, rx, SseConfig(write_delay=0.5))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(driver.run)
        await trio.testing.wait_all_tasks_blocked()
        start = trio.current_time()
        # One event per pass of the scheduler, as on a server where every
        # stream writes between two events of the publisher.
        for i in range(30):
            tx.send_nowait(f"e{i}")
            await trio.lowlevel.checkpoint()
        await trio.sleep(1)
        assert [e.data for e in transport.events()] == [f"e{i}" for i in range(30)]
        writes = [w.count(b"data:") for w in transport.writes if b"data:" in w]
        # Behind once events were waiting after two writes in a row (which
        # depends on the order the scheduler runs the two tasks in), then
        # one write for the rest.
        assert len(writes) <= 10 and writes[-1] >= 15
        assert transport.times[-1] - start == pytest.approx(0.5)
        tx.close()


async def test_a_backlog_of_full_writes_goes_out_without_waiting(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A stream behind by more than coalesce_bytes writes full writes back to
    back: write_delay only gathers what one write would not fill."""
    tx, rx = trio.open_memory_channel[Any](200)
    for i in range(100):
        tx.send_nowait(f"{i} " + "x" * 1000)
    tx.close()
    transport = InstantWriteTransport()
    transport.times = []
    config = SseConfig(coalesce_bytes=10_000, write_delay=0.5)
    start = trio.current_time()
    await StreamDriver(transport, rx, config).run()
    assert len(transport.events()) == 100
    assert len(transport.writes) >= 10
    assert transport.times == [start] * len(transport.writes)


class TimedWriteTransport(FakeTransport):
    """Each write takes ``took`` seconds: a client slower than the events."""

    def __init__(self, took: float) -> None:
        super().__init__()
        self.took = took
        self.started: list[float] = []

    async def write(self, data: bytes) -> None:
        self.started.append(trio.current_time())
        await trio.sleep(self.took)
        self.writes.append(data)


async def test_a_stream_behind_writes_once_per_write_delay_until_it_keeps_up(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Once behind, one write per write_delay gathers what came meanwhile,
    until the stream has waited a whole write_delay for an event.

    Events spaced a little wider than a write do not end it: on a loaded
    server that a stream can keep up depends on the other streams' writes,
    and a write per event is what loads it.
    """
    tx, rx = trio.open_memory_channel[Any](1000)
    transport = TimedWriteTransport(took=0.015)
    driver = StreamDriver(transport, rx, SseConfig(write_delay=0.1))
    sent = 0

    async def publish(count: int, every: float) -> None:
        nonlocal sent
        for _ in range(count):
            await tx.send(f"e{sent}")
            sent += 1
            await trio.sleep(every)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(driver.run)
        await trio.testing.wait_all_tasks_blocked()
        # Faster than the client takes them: the stream falls behind.
        await publish(50, 0.01)
        behind_since = len(transport.started)
        # Then slower than a write, but never a write_delay apart.
        await publish(30, 0.03)
        await trio.sleep(1)
        assert [e.data for e in transport.events()] == [f"e{i}" for i in range(80)]
        gaps = [b - a for a, b in itertools.pairwise(transport.started)]
        assert len(gaps) > behind_since + 5
        assert all(gap >= 0.1 - 1e-9 for gap in gaps[3:])
        # Idle for longer than a write_delay: the next event goes out at once.
        now = trio.current_time()
        await tx.send("late")
        await trio.testing.wait_all_tasks_blocked()
        assert transport.started[-1] == now
        tx.close()


# -- maximum lifetime ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("retry", "final"), [(None, b"retry: 0\n\n"), (2, b"retry: 2000\n\n")]
)
async def test_a_stream_ends_at_its_lifetime_with_a_final_retry(
    autojump_clock: trio.testing.MockClock, retry: float | None, final: bytes
) -> None:
    tx, rx = trio.open_memory_channel[Any](10)
    async with trio.open_nursery() as nursery:
        driver, transport, done = run_driver(
            nursery, rx, SseConfig(retry=retry, keep_alive=4), lifetime=10
        )
        start = trio.current_time()
        await done.wait()
    # Up to 10 % earlier, never later; keep-alives went on until then.
    assert 9 <= trio.current_time() - start <= 10
    assert transport.writes[-1].endswith(final)
    assert b":\n" in transport.writes[1:]
    assert driver.end is End.LIFETIME and transport.closed_with is End.LIFETIME
    assert driver.trace[-3:] == [S.STOPPING, S.DRAINING, S.CLOSED]
    tx.close()


async def test_lifetimes_are_spread_over_ten_percent(
    autojump_clock: trio.testing.MockClock,
) -> None:
    ends: list[float] = []

    async def one() -> None:
        _, rx = trio.open_memory_channel[Any](1)
        driver = StreamDriver(FakeTransport(), rx, SseConfig(max_lifetime=100))
        await driver.run()
        ends.append(trio.current_time())
        assert driver.end is End.LIFETIME

    async with trio.open_nursery() as nursery:
        for _ in range(20):
            nursery.start_soon(one)
    assert all(90 <= end <= 100 for end in ends)
    assert len(set(ends)) > 1


async def test_lifetime_then_reconnect_misses_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    from trio_sse import SseResponse
    from trio_sse.testing import open_stream

    bc: Broadcaster[str, Event] = Broadcaster(
        config=SseConfig(keep_alive=None), history=100
    )
    got: list[str] = []
    last_id: str | None = None

    async def publisher() -> None:
        for i in range(30):
            await trio.sleep(1)
            bc.send("k", Event(f"e{i}"))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(publisher)
        while len(got) < 30:
            stream = bc.subscribe("k", last_event_id=last_id)
            response = SseResponse(stream, config=bc.config, lifetime=7)
            async with open_stream(response, "/") as events:
                async for event in events:
                    got.append(event.data)
                    last_id = event.last_event_id
    assert got == [f"e{i}" for i in range(30)]
