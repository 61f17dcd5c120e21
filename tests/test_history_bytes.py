"""History bounded in bytes (``history_bytes``) as well as in items per key."""

from __future__ import annotations

from collections.abc import Hashable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trio_sse import Broadcaster, ConfigError, Event, MemoryBackend, SseConfig
from trio_sse._backend import HISTORY_BYTES, Replay, parse_event_id


class Recorder:
    """A LocalDelivery that records what it is handed."""

    def __init__(self) -> None:
        self.delivered: list[tuple[Hashable, str, object]] = []

    def deliver(self, key: Hashable, event_id: str, item: object) -> int:
        self.delivered.append((key, event_id, item))
        return 0


def attached(
    history: int, history_bytes: int | None
) -> tuple[MemoryBackend[str, object], Recorder]:
    backend: MemoryBackend[str, object] = MemoryBackend(
        history, history_bytes=history_bytes
    )
    recorder = Recorder()
    backend.attach(recorder)
    return backend, recorder


def block(size: int) -> bytes:
    """A pre-encoded event of exactly ``size`` bytes (``size >= 8``)."""
    return b"data: " + b"x" * (size - 8) + b"\n\n"


def start(backend: MemoryBackend[str, object], key: str, seq: int = 0) -> str:
    """The id ``seq`` of ``key``'s current sequence (``0``: before its first)."""
    return f"{backend._sequences[key].epoch}-{seq}"


def retained(backend: MemoryBackend[str, object], key: str) -> list[object]:
    """Every item ``key`` retains (read through a replay from before them all)."""
    replay = backend.replay_nowait(key, start(backend, key))
    assert replay.complete, "the key's first items were evicted"
    return [item for _, item in replay.items]


# -- the default and bad values ------------------------------------------------------


def test_the_default_bounds_every_memory_backend() -> None:
    assert HISTORY_BYTES == 32 * 1024 * 1024
    assert MemoryBackend().history_bytes == HISTORY_BYTES
    bc: Broadcaster[str, Event] = Broadcaster(history=200)
    backend = bc.backend
    assert isinstance(backend, MemoryBackend)
    assert backend.history_bytes == HISTORY_BYTES
    # The default keeps 32 events of the largest size SseConfig allows.
    largest = SseConfig().max_event_bytes
    assert largest == HISTORY_BYTES // 32
    for _ in range(40):
        bc.send("k", block(largest))
    # Items 9 to 40 are retained: a client that saw item 8 misses nothing.
    assert not backend.replay_nowait("k", start(backend, "k", 7)).complete
    replay = backend.replay_nowait("k", start(backend, "k", 8))
    assert replay.complete and len(replay.items) == 32


def test_no_byte_bound() -> None:
    backend, _ = attached(history=3, history_bytes=None)
    for _ in range(5):
        backend.publish_nowait("k", block(10_000_000))
    assert len(retained_after(backend, "k", 2)) == 3
    bc: Broadcaster[str, object] = Broadcaster(history=3, history_bytes=None)
    assert bc.backend.history_bytes is None  # type: ignore[attr-defined]


def retained_after(
    backend: MemoryBackend[str, object], key: str, seq: int
) -> list[object]:
    replay = backend.replay_nowait(key, start(backend, key, seq))
    assert replay.complete
    return [item for _, item in replay.items]


@pytest.mark.parametrize("value", [0, -1, 1.5, True, "1000"])
def test_bad_history_bytes(value: object) -> None:
    with pytest.raises(ConfigError, match="history_bytes must be an integer >= 1"):
        MemoryBackend(5, history_bytes=value)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="history_bytes"):
        Broadcaster(history=5, history_bytes=value)  # type: ignore[arg-type]


def test_history_bytes_with_a_backend_is_an_error() -> None:
    with pytest.raises(ConfigError, match="history_bytes is a setting of the backend"):
        Broadcaster(history_bytes=1000, backend=MemoryBackend(5))


# -- eviction ------------------------------------------------------------------------


def test_over_the_bound_the_oldest_items_go_and_replay_says_so() -> None:
    backend, recorder = attached(history=100, history_bytes=1000)
    ids = [backend.publish_nowait("k", block(300))[0] for _ in range(5)]
    # 3 x 300 fit in 1000; the fourth pushed the first out, the fifth the second.
    assert backend.replay_nowait("k", ids[1]) == Replay(
        [(ids[2], block(300)), (ids[3], block(300)), (ids[4], block(300))], True
    )
    assert backend.replay_nowait("k", ids[0]) == Replay((), False)
    assert backend.replay_nowait("k", start(backend, "k")) == Replay((), False)
    assert backend.replay_nowait("k", ids[4]) == Replay([], True)
    assert len(recorder.delivered) == 5  # eviction never touches delivery


def test_sizes_are_the_encoded_sizes() -> None:
    # str data and Event fields count as they are written, "data: " included.
    backend, _ = attached(history=100, history_bytes=100)
    backend.publish_nowait("k", "a" * 40)  # 48 bytes on the wire
    backend.publish_nowait("k", "b\nb")  # two lines: 17 bytes
    backend.publish_nowait("k", "c" * 27)  # 35: 100 in all, still fits
    assert retained(backend, "k") == ["a" * 40, "b\nb", "c" * 27]
    backend.publish_nowait("k", "")  # 8 more: the first goes
    assert retained_after(backend, "k", 1) == ["b\nb", "c" * 27, ""]


def test_the_oldest_items_of_any_key_go_first() -> None:
    backend, _ = attached(history=100, history_bytes=1000)
    quiet = [backend.publish_nowait("quiet", block(200))[0] for _ in range(2)]
    busy = [backend.publish_nowait("busy", block(200))[0] for _ in range(4)]
    # 1200 bytes: the quiet key's older item went.
    assert backend.replay_nowait("quiet", quiet[0]) == Replay(
        [(quiet[1], block(200))], True
    )
    assert backend.replay_nowait("quiet", start(backend, "quiet")).complete is False
    busy.append(backend.publish_nowait("busy", block(200))[0])
    # Its newest went too: a client that saw it still misses nothing.
    assert backend.replay_nowait("quiet", quiet[1]) == Replay([], True)
    assert backend.replay_nowait("quiet", quiet[0]) == Replay((), False)
    assert len(retained(backend, "busy")) == 5


def test_an_item_larger_than_the_bound_is_delivered_not_retained() -> None:
    backend, recorder = attached(history=100, history_bytes=1000)
    other = backend.publish_nowait("other", block(100))[0]
    before = [backend.publish_nowait("k", block(100))[0] for _ in range(2)]
    huge, _ = backend.publish_nowait("k", block(1001))
    assert recorder.delivered[-1] == ("k", huge, block(1001))
    # A replay across it would have a gap: the key's older items went with it.
    assert backend.replay_nowait("k", before[1]) == Replay((), False)
    assert backend.replay_nowait("k", huge) == Replay([], True)
    after = backend.publish_nowait("k", block(100))[0]
    assert backend.replay_nowait("k", huge) == Replay([(after, block(100))], True)
    # Other keys keep theirs; exactly the bound fits.
    assert backend.replay_nowait("other", start(backend, "other")) == Replay(
        [(other, block(100))], True
    )
    exact, _ = backend.publish_nowait("k", block(1000))
    assert backend.replay_nowait("k", after) == Replay([(exact, block(1000))], True)


def test_forget_frees_the_bytes() -> None:
    backend, _ = attached(history=100, history_bytes=1000)
    for _ in range(3):
        backend.publish_nowait("old", block(300))
    backend.forget("old")
    ids = [backend.publish_nowait("new", block(300))[0] for _ in range(3)]
    assert backend.replay_nowait("new", start(backend, "new")) == Replay(
        [(event_id, block(300)) for event_id in ids], True
    )


async def test_a_subscriber_whose_id_was_evicted_by_bytes_replays_incomplete() -> None:
    bc: Broadcaster[str, str] = Broadcaster(history=100, history_bytes=1000)
    ids = [await bc.publish("k", f"{n}" + "x" * 290) for n in range(5)]
    async with bc.subscribe("k", last_event_id=ids[0]) as stream:
        assert not stream.replay_complete  # ids[1] was evicted
        bc.send("k", "live")
        assert await stream.receive() == "live"
    async with bc.subscribe("k", last_event_id=ids[1]) as stream:
        assert stream.replay_complete
        assert [(await stream.receive())[0] for _ in range(3)] == ["2", "3", "4"]


# -- a model of the bound --------------------------------------------------------------


class Model:
    """What history retains: per key at most ``history`` items, over all keys
    at most ``limit`` bytes, the oldest of any key going first."""

    def __init__(self, history: int, limit: int) -> None:
        self.history = history
        self.limit = limit
        self.entries: list[tuple[str, int, int]] = []  # (key, seq, size), in order
        self.floor: dict[str, int] = {}

    def drop(self, index: int) -> None:
        key, seq, _ = self.entries.pop(index)
        self.floor[key] = seq

    def publish(self, key: str, seq: int, size: int) -> None:
        self.floor.setdefault(key, 0)
        mine = [i for i, entry in enumerate(self.entries) if entry[0] == key]
        if size > self.limit:
            for index in reversed(mine):
                self.entries.pop(index)
            self.floor[key] = seq
            return
        if len(mine) == self.history:
            self.drop(mine[0])
        self.entries.append((key, seq, size))
        while sum(entry[2] for entry in self.entries) > self.limit:
            self.drop(0)

    def forget(self, key: str) -> None:
        self.entries = [entry for entry in self.entries if entry[0] != key]
        self.floor.pop(key, None)

    def replay(self, key: str, after: int) -> tuple[list[int], bool]:
        if key not in self.floor:
            return [], True
        if after < self.floor[key]:
            return [], False
        return [s for k, s, _ in self.entries if k == key and s > after], True


KEYS = ["a", "b", "c"]
steps = st.lists(
    st.one_of(
        st.tuples(st.just("publish"), st.sampled_from(KEYS), st.integers(8, 400)),
        st.tuples(st.just("forget"), st.sampled_from(KEYS), st.just(0)),
    ),
    max_size=120,
)


@settings(max_examples=300, deadline=None)
@given(history=st.integers(1, 6), limit=st.integers(8, 1200), steps=steps)
def test_history_agrees_with_a_model(
    history: int, limit: int, steps: list[tuple[str, str, int]]
) -> None:
    backend, _ = attached(history, limit)
    model = Model(history, limit)
    issued: list[str] = []
    current: dict[str, int] = {}  # key -> the epoch of its current sequence
    for action, key, size in steps:
        if action == "forget":
            backend.forget(key)
            model.forget(key)
            current.pop(key, None)
            continue
        event_id, _ = backend.publish_nowait(key, block(size))
        parsed = parse_event_id(event_id)
        assert parsed is not None
        current[key] = parsed[0]
        model.publish(key, parsed[1], size)
        issued.append(event_id)
        budget = backend._budget
        assert budget is not None
        assert budget.size == sum(entry[2] for entry in model.entries) <= limit
        assert budget.held == len(model.entries)
        assert len(budget.order) <= 2 * budget.held + 1025
    for key in KEYS:
        for event_id in issued:
            parsed = parse_event_id(event_id)
            assert parsed is not None
            replay = backend.replay_nowait(key, event_id)
            if current.get(key) != parsed[0]:
                # Another key's id, or one from before the key was forgotten.
                assert not replay.complete
                continue
            seqs, complete = model.replay(key, parsed[1])
            assert replay.complete == complete
            if complete:
                got = [parse_event_id(e) for e, _ in replay.items]
                assert [p[1] for p in got if p is not None] == seqs


def test_stale_places_are_compacted() -> None:
    # A count bound evicting without the byte bound leaves places behind.
    backend, _ = attached(history=1, history_bytes=10**9)
    for n in range(10_000):
        backend.publish_nowait(f"key{n % 3}", block(8))
    budget = backend._budget
    assert budget is not None and budget.held == 3
    assert len(budget.order) <= 2 * 3 + 1025
