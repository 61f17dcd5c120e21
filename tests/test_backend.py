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


def epoch_of(event_id: str) -> int:
    parsed = parse_event_id(event_id)
    assert parsed is not None
    return parsed[0]


def test_publish_nowait_assigns_ids_and_delivers() -> None:
    backend, recorder = attached(history=2)
    first, count = backend.publish_nowait("k", "a")
    other, _ = backend.publish_nowait("other", "b")
    second, _ = backend.publish_nowait("k", "c")
    assert count == 7
    epoch = epoch_of(first)
    assert (first, second) == (f"{epoch}-1", f"{epoch}-2")
    # The first sequence starts at the backend's epoch (or later).
    assert epoch >= backend.epoch
    assert other == f"{epoch_of(other)}-1"
    assert epoch_of(other) > epoch
    assert recorder.delivered == [
        ("k", first, "a"),
        ("other", other, "b"),
        ("k", second, "c"),
    ]


def test_publish_nowait_stamps_events_once() -> None:
    backend, recorder = attached(history=2)
    event_id, _ = backend.publish_nowait("k", Event("a"))
    delivered = recorder.delivered[0][2]
    assert isinstance(delivered, Event) and delivered.id == event_id
    replayed = backend.replay_nowait("k", f"{epoch_of(event_id)}-0")
    assert replayed.items[0][1] is delivered


def test_ids_of_a_key_do_not_count_other_keys() -> None:
    backend, _ = attached(history=3)
    backend.subscribed("b")
    ids_a = []
    for n in range(5):
        for _ in range(n * 10):
            backend.publish_nowait("b", "traffic")
        ids_a.append(backend.publish_nowait("a", n)[0])
    # One epoch, consecutive numbers: nothing about b's 100 items.
    assert [parse_event_id(i) for i in ids_a] == [
        (epoch_of(ids_a[0]), n) for n in range(1, 6)
    ]


def test_a_key_forgotten_and_created_again_never_reuses_an_id() -> None:
    backend, _ = attached(history=3)
    old = [backend.publish_nowait("k", n)[0] for n in range(3)]
    backend.forget("k")
    new = [backend.publish_nowait("k", n)[0] for n in range(3)]
    assert not set(old) & set(new)
    ordered = [parse_event_id(i) for i in old + new]
    assert ordered == sorted(ordered)
    # An id from before forget() cannot prove that nothing was missed since.
    for event_id in old:
        assert backend.replay_nowait("k", event_id) == Replay((), False)
    assert backend.replay_nowait("k", new[0]) == Replay(
        [(new[1], 1), (new[2], 2)], True
    )


def test_the_id_of_another_key_is_unknown() -> None:
    backend, _ = attached(history=3)
    mine = backend.publish_nowait("mine", "x")[0]
    backend.publish_nowait("theirs", "secret")
    theirs = backend.publish_nowait("theirs", "secret")[0]
    backend.publish_nowait("mine", "y")
    for event_id in (theirs, f"{epoch_of(theirs)}-0"):
        assert backend.replay_nowait("mine", event_id) == Replay((), False)
    # Not even a position: the same numbers in the other key's epoch.
    assert backend.replay_nowait("theirs", mine) == Replay((), False)


def test_new_epochs_increase_when_the_clock_goes_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    backend, _ = attached(history=1)
    now = [time.time_ns()]
    monkeypatch.setattr(time, "time_ns", lambda: now[0])
    epochs = []
    for key, step in enumerate([0, 0, -(10**12), 0, 2 * 10**12]):
        now[0] += step
        epochs.append(epoch_of(backend.publish_nowait(key, "x")[0]))
    assert epochs == sorted(set(epochs))
    # The random digits chosen when the backend was built follow the clock.
    assert epochs[-1] % 1_000_000 == backend.epoch % 1_000_000


def test_without_history_a_sequence_lives_while_the_key_has_subscribers() -> None:
    backend, _ = attached()
    # Nobody listens: each item gets an id of a new sequence, nothing is kept.
    loose = [backend.publish_nowait("k", n)[0] for n in range(3)]
    assert [i.endswith("-1") for i in loose] == [True] * 3
    epochs = [epoch_of(i) for i in loose]
    assert epochs == sorted(set(epochs))
    assert backend.replay_nowait("k", loose[-1]) == Replay((), False)
    for n in range(1000):
        backend.publish_nowait(f"user{n}", "x")
    assert backend._sequences == {}
    # A subscribed key counts on: its newest id is complete, an older one not.
    backend.subscribed("k")
    ids = [backend.publish_nowait("k", n)[0] for n in range(3)]
    assert [i.split("-")[1] for i in ids] == ["1", "2", "3"]
    assert epoch_of(ids[0]) > epoch_of(loose[-1])
    assert backend.replay_nowait("k", ids[-1]) == Replay((), True)
    assert backend.replay_nowait("k", ids[0]) == Replay((), False)
    # Its last subscriber gone, nothing proves that no item was missed.
    backend.unsubscribed("k")
    assert backend.replay_nowait("k", ids[-1]) == Replay((), False)
    assert backend._sequences == {}


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
    # Forgotten: its ids no longer prove that nothing was missed.
    assert backend.replay_nowait("k", first) == Replay((), False)
    assert backend.replay_nowait("k", None) == Replay((), True)
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
