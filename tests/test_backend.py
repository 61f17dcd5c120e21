"""The backend seam: MemoryBackend, id parsing, and a network-like backend."""

from __future__ import annotations

import math
import time
from collections.abc import Hashable

import pytest
import trio
import trio.testing

from trio_sse import (
    Backend,
    Broadcaster,
    ConfigError,
    Event,
    MemoryBackend,
    SseError,
)
from trio_sse._backend import LocalDelivery, Replay, parse_event_id, stamp

# -- ids --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event_id", "parsed"),
    [
        ("1-2", (1, 2)),
        ("1700000000000-0", (1700000000000, 0)),
        ("0012-0003", (12, 3)),
        ("", None),
        ("1", None),
        ("1-", None),
        ("-1", None),
        ("a-1", None),
        ("1-2-3", None),
        (" 1-2", None),
        ("1-2\n", None),
        ("١-٢", None),  # non-ASCII digits
        ("1" * 41 + "-1", None),  # over-long: never parsed as a huge int
        (12, None),
        (None, None),
    ],
)
def test_parse_event_id(event_id: object, parsed: tuple[int, int] | None) -> None:
    assert parse_event_id(event_id) == parsed


def test_ids_order_numerically() -> None:
    ids = ["5-9", "5-10", "6-1", "10-0"]
    assert sorted(ids, key=parse_event_id) == ids  # type: ignore[arg-type]
    assert sorted(ids) != ids  # string order would be wrong


def test_stamp() -> None:
    event = Event("x")
    stamped = stamp(event, "1-1")
    assert stamped.id == "1-1" and event.id is None
    own = Event("x", id="mine")
    assert stamp(own, "1-1") is own
    assert stamp("text", "1-1") == "text"


# -- MemoryBackend ----------------------------------------------------------------


class Recorder:
    """A LocalDelivery that records what it is handed."""

    def __init__(self) -> None:
        self.delivered: list[tuple[Hashable, str, object]] = []

    def deliver(self, key: Hashable, event_id: str, item: object) -> int:
        self.delivered.append((key, event_id, item))
        return 7


def attached(history: int = 0) -> tuple[MemoryBackend[str, object], Recorder]:
    backend: MemoryBackend[str, object] = MemoryBackend(history)
    recorder = Recorder()
    backend.attach(recorder)
    return backend, recorder


def test_memory_backend_is_a_backend() -> None:
    backend: Backend[str, object] = MemoryBackend()
    local: LocalDelivery[str, object] = Broadcaster[str, object](backend=backend)
    assert local is not None


def test_epoch_is_time_plus_randomness() -> None:
    before = time.time_ns() // 1_000_000
    epochs = {MemoryBackend().epoch for _ in range(50)}
    after = time.time_ns() // 1_000_000
    assert len(epochs) == 50
    for epoch in epochs:
        assert before <= epoch // 1_000_000 <= after


def test_publish_nowait_assigns_ids_and_delivers() -> None:
    backend, recorder = attached()
    first, count = backend.publish_nowait("k", "a")
    second, _ = backend.publish_nowait("other", "b")
    assert count == 7
    assert first == f"{backend.epoch}-1"
    assert second == f"{backend.epoch}-2"
    assert recorder.delivered == [("k", first, "a"), ("other", second, "b")]


def test_publish_nowait_stamps_events_once() -> None:
    backend, recorder = attached(history=2)
    event_id, _ = backend.publish_nowait("k", Event("a"))
    delivered = recorder.delivered[0][2]
    assert isinstance(delivered, Event) and delivered.id == event_id
    replayed = backend.replay_nowait("k", f"{backend.epoch}-0")
    assert replayed.items[0][1] is delivered


def test_unattached_backend_refuses_to_publish() -> None:
    with pytest.raises(RuntimeError, match="not attached"):
        MemoryBackend().publish_nowait("k", "x")


@pytest.mark.parametrize("history", [-1, 1.0, True, "3"])
def test_memory_backend_rejects_bad_history(history: object) -> None:
    with pytest.raises(ConfigError, match="history"):
        MemoryBackend(history)  # type: ignore[arg-type]


def test_history_is_bounded_and_tracks_what_it_evicted() -> None:
    backend, _ = attached(history=2)
    ids = [backend.publish_nowait("k", i)[0] for i in range(5)]
    assert backend.replay_nowait("k", ids[2]) == Replay(
        [(ids[3], 3), (ids[4], 4)], True
    )
    assert backend.replay_nowait("k", ids[3]) == Replay([(ids[4], 4)], True)
    assert backend.replay_nowait("k", ids[4]) == Replay([], True)
    assert backend.replay_nowait("k", ids[1]) == Replay((), False)
    assert backend.replay_nowait("k", None) == Replay((), True)


def test_forget_drops_the_history() -> None:
    backend, _ = attached(history=2)
    first, _ = backend.publish_nowait("k", 1)
    backend.publish_nowait("k", 2)
    backend.forget("k")
    assert backend.replay_nowait("k", first) == Replay((), True)
    backend.forget("never")


async def test_memory_backend_async_methods_are_checkpoints() -> None:
    backend, recorder = attached(history=3)
    with trio.CancelScope() as scope:
        scope.cancel()
        await backend.publish("k", "lost")
    assert recorder.delivered == []
    event_id = await backend.publish("k", "kept")
    assert (await backend.replay("k", None)).complete
    with trio.CancelScope() as scope:
        scope.cancel()
        await backend.replay("k", event_id)
    assert scope.cancelled_caught


async def test_broadcaster_with_an_explicit_memory_backend() -> None:
    backend: MemoryBackend[str, int] = MemoryBackend(history=4)
    async with Broadcaster(backend=backend) as bc:
        first = await bc.publish("k", 1)
        await bc.publish("k", 2)
        async with bc.subscribe("k", last_event_id=first) as stream:
            assert stream.replay_complete
            assert await stream.__anext__() == 2
        assert bc.send("k", 3) == 0


# -- a network-like backend behind the same seam ------------------------------------


class NetworkBackend:
    """Like a Redis Streams backend: publish goes to a "server", a reader task
    in the broadcaster's nursery delivers what it reads back, and history is
    read asynchronously (gated by ``replay_gate`` so tests can publish while
    a replay is being read)."""

    epoch = 7

    def __init__(self) -> None:
        self.local: LocalDelivery[str, object] | None = None
        self.seq = 0
        self.history: dict[str, list[tuple[str, object]]] = {}
        self.to_server, self.from_server = trio.open_memory_channel[
            tuple[str, str, object]
        ](math.inf)
        self.reading: set[str] = set()
        self.events: list[str] = []
        self.replay_gate = trio.Event()
        self.replay_gate.set()
        self.crash = trio.Event()

    def attach(self, local: LocalDelivery[str, object]) -> None:
        self.local = local

    async def start(self, nursery: trio.Nursery) -> None:
        nursery.start_soon(self._reader)
        nursery.start_soon(self._crasher)
        self.events.append("start")
        await trio.lowlevel.checkpoint()

    async def stop(self) -> None:
        self.events.append("stop")
        await trio.lowlevel.checkpoint()

    async def _reader(self) -> None:
        try:
            async for key, event_id, item in self.from_server:
                if key in self.reading and self.local is not None:
                    self.local.deliver(key, event_id, item)
        finally:
            self.events.append("reader done")

    async def _crasher(self) -> None:
        await self.crash.wait()
        raise OSError("connection lost")

    def publish_nowait(self, key: str, item: object) -> tuple[str, int]:
        raise trio.WouldBlock

    async def publish(self, key: str, item: object) -> str:
        if "start" not in self.events:
            raise RuntimeError("NetworkBackend needs 'async with broadcaster:'")
        self.seq += 1
        event_id = f"{self.epoch}-{self.seq}"
        item = stamp(item, event_id)
        self.history.setdefault(key, []).append((event_id, item))
        await self.to_server.send((key, event_id, item))
        return event_id

    def replay_nowait(self, key: str, last_event_id: str | None) -> Replay[object]:
        raise trio.WouldBlock

    async def replay(self, key: str, last_event_id: str | None) -> Replay[object]:
        await self.replay_gate.wait()
        after = parse_event_id(last_event_id)
        if after is None or after[0] != self.epoch:
            return Replay((), False)
        items = self.history.get(key, [])
        return Replay(
            [p for p in items if (parse_event_id(p[0]) or (0, 0)) > after], True
        )

    def subscribed(self, key: str) -> None:
        self.reading.add(key)

    def unsubscribed(self, key: str) -> None:
        self.reading.discard(key)

    def forget(self, key: str) -> None:
        self.history.pop(key, None)


async def test_send_with_a_network_backend_points_to_publish() -> None:
    bc: Broadcaster[str, object] = Broadcaster(backend=NetworkBackend())
    with pytest.raises(SseError, match=r"await broadcaster\.publish"):
        bc.send("k", "x")


async def test_async_with_runs_the_backend_tasks() -> None:
    backend = NetworkBackend()
    async with Broadcaster[str, object](backend=backend) as bc:
        assert backend.events == ["start"]
        stream = bc.subscribe("k")
        assert backend.reading == {"k"}
        event_id = await bc.publish("k", "x")
        assert await stream.__anext__() == "x"
        assert stream.last_id == event_id
    # Exit: the backend stops, local subscribers end, its tasks are cancelled.
    assert backend.events == ["start", "stop", "reader done"]
    assert [i async for i in stream] == []
    assert bc.keys() == [] and backend.reading == set()


async def test_entering_twice_is_an_error() -> None:
    bc: Broadcaster[str, object] = Broadcaster(backend=NetworkBackend())
    async with bc:
        with pytest.raises(RuntimeError, match="already running"):
            await bc.__aenter__()
    with pytest.raises(RuntimeError, match="not running"):
        await bc.__aexit__(None, None, None)


async def test_an_error_in_the_body_is_not_wrapped() -> None:
    with pytest.raises(KeyError):
        async with Broadcaster[str, object](backend=NetworkBackend()):
            raise KeyError("body")


async def test_a_failing_backend_task_ends_the_block() -> None:
    backend = NetworkBackend()
    with pytest.RaisesGroup(OSError):
        async with Broadcaster[str, object](backend=backend):
            backend.crash.set()
            await trio.sleep_forever()


async def test_publish_before_async_with_is_the_backends_error() -> None:
    bc: Broadcaster[str, object] = Broadcaster(backend=NetworkBackend())
    with pytest.raises(RuntimeError, match="async with"):
        await bc.publish("k", "x")


async def test_async_replay_is_read_on_entering_the_stream() -> None:
    backend = NetworkBackend()
    async with Broadcaster[str, object](backend=backend) as bc:
        first = await bc.publish("k", "a")
        await bc.publish("k", "b")
        stream = bc.subscribe("k", last_event_id=first)
        assert not stream.replay_complete  # not read yet
        async with stream:
            assert stream.replay_complete
            assert await stream.__anext__() == "b"
        unknown = bc.subscribe("k", last_event_id="999-1")
        async with unknown:
            assert not unknown.replay_complete


async def test_async_replay_is_read_on_first_iteration_too() -> None:
    backend = NetworkBackend()
    async with Broadcaster[str, object](backend=backend) as bc:
        first = await bc.publish("k", "a")
        await bc.publish("k", "b")
        stream = bc.subscribe("k", last_event_id=first)
        assert await stream.__anext__() == "b"
        assert stream.replay_complete
        await stream.aclose()


async def test_replay_drops_live_duplicates_read_while_replaying() -> None:
    # Register first, read history second: what is published in between is
    # both in the history and in the channel, and comes out once, in order.
    backend = NetworkBackend()
    async with Broadcaster[str, object](backend=backend) as bc:
        first = await bc.publish("k", 1)
        await bc.publish("k", 2)
        backend.replay_gate = trio.Event()
        stream = bc.subscribe("k", last_event_id=first)
        got: list[object] = []
        async with trio.open_nursery() as nursery:

            async def consume() -> None:
                async with stream:
                    while len(got) < 4:
                        got.append(await stream.__anext__())

            nursery.start_soon(consume)
            await trio.testing.wait_all_tasks_blocked()  # blocked in replay
            await bc.publish("k", 3)
            await bc.publish("k", 4)
            await trio.testing.wait_all_tasks_blocked()  # 3, 4 are in the channel
            backend.replay_gate.set()
            await trio.testing.wait_all_tasks_blocked()
            await bc.publish("k", 5)
        assert got == [2, 3, 4, 5]


async def test_closing_a_stream_while_its_replay_is_read() -> None:
    backend = NetworkBackend()
    async with Broadcaster[str, object](backend=backend) as bc:
        first = await bc.publish("k", 1)
        await bc.publish("k", 2)
        backend.replay_gate = trio.Event()
        stream = bc.subscribe("k", last_event_id=first)
        async with trio.open_nursery() as nursery:
            got: list[object] = []

            async def consume() -> None:
                got.extend([i async for i in stream])

            nursery.start_soon(consume)
            await trio.testing.wait_all_tasks_blocked()
            stream.close()
            backend.replay_gate.set()
        assert got == []
