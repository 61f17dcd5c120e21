"""The seam between a :class:`~trio_sse.Broadcaster` and where its items travel.

A backend assigns event ids, keeps the history that ``Last-Event-ID`` replays
from, and hands every item to the broadcaster's local subscribers through a
:class:`LocalDelivery`. :class:`MemoryBackend` (the default) does all three in
process; a network backend (Redis Streams) publishes to a server and delivers
what its reader tasks read back, running those tasks in the nursery that
``async with Broadcaster(...)`` opens.
"""

from __future__ import annotations

import re
import secrets
import time
from collections import deque
from collections.abc import Hashable, Sequence
from typing import Any, Generic, Protocol, TypeVar

import attrs
import trio

from ._errors import ConfigError
from ._event import Event, encoded_size

__all__ = [
    "Backend",
    "LocalDelivery",
    "MemoryBackend",
    "Replay",
    "parse_event_id",
    "stamp",
]

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")
K_contra = TypeVar("K_contra", bound=Hashable, contravariant=True)
T_contra = TypeVar("T_contra", contravariant=True)

# "<int>-<int>": the memory backend's "<epoch>-<seq>" and Redis Stream ids.
_ID = re.compile(r"([0-9]{1,40})-([0-9]{1,40})", re.ASCII)


def parse_event_id(event_id: object) -> tuple[int, int] | None:
    """Return ``event_id`` as a comparable ``(major, minor)`` pair, or ``None``.

    Ids of the form ``"<int>-<int>"`` (the memory backend's
    ``"<epoch>-<seq>"``, Redis Stream ids) order numerically by this pair,
    never as strings: ``"5-10"`` comes after ``"5-9"``. Anything else
    (another format, an over-long number, a non-``str``) gives ``None``.
    """
    if not isinstance(event_id, str):
        return None
    match = _ID.fullmatch(event_id)
    if match is None:
        return None
    return int(match[1]), int(match[2])


def stamp(item: T, event_id: str) -> T:
    """Return ``item`` with ``event_id`` attached if it is an id-less :class:`Event`.

    Done once per published item, so every subscriber shares one
    :class:`~trio_sse.Event` object and the broadcast encodes once. Any other
    item (or an :class:`~trio_sse.Event` that has an id) is returned as is.
    """
    if isinstance(item, Event) and item.id is None:
        return item.with_id(event_id)  # type: ignore[return-value]
    return item


@attrs.frozen
class Replay(Generic[T]):
    """What a backend retains for a key after a ``Last-Event-ID``."""

    #: The retained ``(event_id, item)`` pairs after the id, oldest first
    #: (ignored when the replay is not complete).
    items: Sequence[tuple[str, T]]
    #: ``False`` when the id is unknown, malformed or older than what is
    #: retained: items may be missing between the id and ``items``.
    complete: bool


class LocalDelivery(Protocol[K_contra, T_contra]):
    """What a backend sees of its broadcaster: delivery to local subscribers."""

    def deliver(self, key: K_contra, event_id: str, item: T_contra) -> int:
        """Queue ``item`` for every local subscriber of ``key``; return how many.

        Synchronous and never blocks: a subscriber that cannot take the item
        lags according to its own policy.
        """
        ...


class Backend(Protocol[K, T]):
    """Id assignment, history and delivery behind a :class:`~trio_sse.Broadcaster`.

    A backend serves one broadcaster, which calls :meth:`attach` once when it
    is built. Ids must be ``"<int>-<int>"`` strings, strictly increasing per
    key in the order :func:`parse_event_id` gives them.
    """

    def attach(self, local: LocalDelivery[K, T]) -> None:
        """Remember where to deliver items; called once by the broadcaster."""
        ...

    async def start(self, nursery: trio.Nursery) -> None:
        """Start background tasks (readers, reconnection) in ``nursery``.

        Called when ``async with broadcaster:`` is entered; the nursery is
        cancelled after :meth:`stop` when the block exits.
        """
        ...

    async def stop(self) -> None:
        """Flush and stop; called when ``async with broadcaster:`` exits."""
        ...

    def publish_nowait(self, key: K, item: T) -> tuple[str, int]:
        """Publish without waiting; return ``(event_id, local subscribers)``.

        :raises trio.WouldBlock: if this backend publishes over the network
            (callers then use :meth:`publish`).
        """
        ...

    async def publish(self, key: K, item: T) -> str:
        """Publish ``item`` to ``key`` everywhere; return its event id."""
        ...

    def replay_nowait(self, key: K, last_event_id: str | None) -> Replay[T]:
        """Return what is retained for ``key`` after ``last_event_id``.

        :raises trio.WouldBlock: if reading the history needs I/O (callers
            then use :meth:`replay`).
        """
        ...

    async def replay(self, key: K, last_event_id: str | None) -> Replay[T]:
        """Like :meth:`replay_nowait`, reading the history over the network."""
        ...

    def subscribed(self, key: K) -> None:
        """``key`` gained its first local subscriber (start reading it)."""
        ...

    def unsubscribed(self, key: K) -> None:
        """``key`` lost its last local subscriber (stop reading it)."""
        ...

    def forget(self, key: K) -> None:
        """Drop what is retained for ``key`` (:meth:`Broadcaster.remove`)."""
        ...


#: The default ``history_bytes`` of a :class:`MemoryBackend`: 32 MiB.
HISTORY_BYTES = 32 * 1024 * 1024


def _new_epoch() -> int:
    # Milliseconds since the Unix epoch, times a million, plus six random
    # digits: later processes get larger epochs, and two broadcasters built
    # in the same millisecond collide with probability one in a million.
    return time.time_ns() // 1_000_000 * 1_000_000 + secrets.randbelow(1_000_000)


class _Sequence:
    """One key's ids, ``"<epoch>-<seq>"``: the epoch is chosen when it starts."""

    __slots__ = ("epoch", "prefix", "seq")

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch
        self.prefix = f"{epoch}-"
        self.seq = 0


class _History(Generic[T]):
    """One key's bounded history: ``(seq, event_id, item)``, oldest first."""

    __slots__ = ("budget", "entries", "floor", "sizes", "stale")

    def __init__(self, size: int, budget: _Budget | None) -> None:
        self.entries: deque[tuple[int, str, T]] = deque(maxlen=size)
        # The newest sequence number evicted (0: nothing evicted yet).
        self.floor = 0
        # With a byte bound: each entry's size, and how many of this key's
        # places in the budget's order belong to entries already gone.
        self.budget = budget
        self.sizes: deque[int] = deque()
        self.stale = 0

    def append(self, seq: int, event_id: str, item: T) -> None:
        budget = self.budget
        entries = self.entries
        if budget is None:
            if len(entries) == entries.maxlen:
                self.floor = entries[0][0]
            entries.append((seq, event_id, item))
            return
        size = encoded_size(item, budget.limit) or 0
        if size > budget.limit:
            # Never kept, and a replay across it would have a gap: what came
            # before it goes too.
            self.clear()
            self.floor = seq
            return
        if len(entries) == entries.maxlen:
            self.evict()
            self.stale += 1
        entries.append((seq, event_id, item))
        self.sizes.append(size)
        budget.add(self, size)

    def evict(self) -> None:
        """Drop the oldest entry (there is one)."""
        self.floor = self.entries.popleft()[0]
        if self.budget is not None:
            self.budget.remove(self.sizes.popleft())

    def clear(self) -> None:
        """Drop every entry (the key is forgotten, or an item never fits)."""
        if self.entries:
            self.floor = self.entries[-1][0]
        budget = self.budget
        if budget is not None:
            self.stale += len(self.sizes)
            while self.sizes:
                budget.remove(self.sizes.pop())
        self.entries.clear()


class _Budget:
    """The bytes every key's history holds together, and the order to evict in.

    ``order`` has one place per entry appended, oldest first: evicting over
    the limit takes the key at the front and drops that key's oldest entry.
    An entry that went another way (the key's ``history`` count, a forgotten
    key) leaves a stale place, counted in its key's ``stale``; stale places
    come first among a key's places, since a key drops its entries oldest
    first. When stale places outnumber live ones (by 1024), ``order`` is
    rebuilt without them, so it stays within twice the entries held.
    """

    __slots__ = ("held", "limit", "order", "size")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.size = 0
        self.held = 0
        self.order: deque[_History[Any]] = deque()

    def add(self, history: _History[Any], size: int) -> None:
        self.size += size
        self.held += 1
        order = self.order
        order.append(history)
        while self.size > self.limit:
            oldest = order.popleft()
            if oldest.stale:
                oldest.stale -= 1
            else:
                oldest.evict()
        if len(order) > 2 * self.held + 1024:
            self._compact()

    def remove(self, size: int) -> None:
        self.size -= size
        self.held -= 1

    def _compact(self) -> None:
        live: deque[_History[Any]] = deque()
        for history in self.order:
            if history.stale:
                history.stale -= 1
            else:
                live.append(history)
        self.order = live


class MemoryBackend(Generic[K, T]):
    """The in-process backend: ids ``"<epoch>-<seq>"``, history in a deque.

    Every key has a sequence of its own, so the ids a subscriber sees say
    nothing about the traffic of other keys. A sequence gets its epoch when
    it starts (the clock in milliseconds, then random digits chosen when
    the backend is built), greater than every epoch this backend gave
    before: ids from an earlier process, another broadcaster, another key or
    a key that was forgotten and created again are never mistaken for the
    current ones, and a key's ids keep increasing across such a restart.

    A key's sequence lives while the key has history or subscribers; without
    either there is nothing to replay, so each item gets an id of a new
    sequence. With ``history > 0`` each key retains its last ``history``
    items, also while it has no subscriber (a reconnecting client gets
    them), until :meth:`forget` drops them. All keys together retain at most
    ``history_bytes`` bytes of items (their encoded size, counted without
    encoding): over it, the oldest items of any key go first. An item larger
    than ``history_bytes`` is delivered but not retained. Either way a
    ``Last-Event-ID`` from before an evicted item replays incomplete.

    :param history: items retained per key for ``Last-Event-ID`` replay.
    :param history_bytes: bytes retained over all keys (default 32 MiB);
        ``None``: no byte bound, only ``history`` items per key. Items other
        than :class:`~trio_sse.Event`, ``str`` and bytes count as 0 bytes.
    """

    def __init__(
        self, history: int = 0, *, history_bytes: int | None = HISTORY_BYTES
    ) -> None:
        if isinstance(history, bool) or not isinstance(history, int) or history < 0:
            raise ConfigError(f"history must be an integer >= 0, got {history!r}")
        if history_bytes is not None and (
            isinstance(history_bytes, bool)
            or not isinstance(history_bytes, int)
            or history_bytes < 1
        ):
            raise ConfigError(
                f"history_bytes must be an integer >= 1 or None, got {history_bytes!r}"
            )
        #: Items retained per key.
        self.history = history
        #: Bytes retained over all keys (``None``: no byte bound).
        self.history_bytes = history_bytes
        self._budget = None if history_bytes is None else _Budget(history_bytes)
        #: The epoch chosen when the backend was built: every key's epoch,
        #: the first part of its ids, is at least this one.
        self.epoch = _new_epoch()
        # The newest epoch given to a sequence: the next one is greater.
        self._last_epoch = self.epoch - 1
        self._random_digits = self.epoch % 1_000_000
        self._sequences: dict[K, _Sequence] = {}
        self._histories: dict[K, _History[T]] = {}
        self._local: LocalDelivery[K, T] | None = None

    def attach(self, local: LocalDelivery[K, T]) -> None:
        """Deliver to ``local``; a backend serves a single broadcaster."""
        if self._local is not None:
            raise RuntimeError("this MemoryBackend already serves a Broadcaster")
        self._local = local

    async def start(self, nursery: trio.Nursery) -> None:
        """Nothing to start: the memory backend has no background task."""
        await trio.lowlevel.checkpoint()

    async def stop(self) -> None:
        """Nothing to stop."""
        await trio.lowlevel.checkpoint()

    def publish_nowait(self, key: K, item: T) -> tuple[str, int]:
        """Assign the next id, record the item in history and deliver it."""
        local = self._local
        if local is None:
            raise RuntimeError("MemoryBackend is not attached to a Broadcaster")
        sequence = self._sequences.get(key)
        if sequence is None and not self.history:
            # No subscriber and no history: nothing to continue later, so
            # the item gets the one id of a new sequence.
            seq = 1
            event_id = f"{self._next_epoch()}-1"
        else:
            if sequence is None:
                sequence = self._sequences[key] = _Sequence(self._next_epoch())
            sequence.seq = seq = sequence.seq + 1
            event_id = sequence.prefix + str(seq)
        item = stamp(item, event_id)
        if self.history:
            history = self._histories.get(key)
            if history is None:
                history = self._histories[key] = _History(self.history, self._budget)
            history.append(seq, event_id, item)
        return event_id, local.deliver(key, event_id, item)

    async def publish(self, key: K, item: T) -> str:
        """Like :meth:`publish_nowait`, as a checkpoint; return the id."""
        await trio.lowlevel.checkpoint_if_cancelled()
        event_id, _ = self.publish_nowait(key, item)
        await trio.lowlevel.cancel_shielded_checkpoint()
        return event_id

    def replay_nowait(self, key: K, last_event_id: str | None) -> Replay[T]:
        """Return the retained items of ``key`` after ``last_event_id``.

        Complete when no id is given, or when the id belongs to the key's
        current sequence and nothing of ``key`` after it has been evicted.
        An id of another sequence (another key, process or broadcaster, or
        the key before :meth:`forget`) is incomplete: history cannot prove
        that nothing was missed. With ``history == 0`` only the key's newest
        id is complete (nothing can have been missed after it).
        """
        if last_event_id is None:
            return Replay((), True)
        parsed = parse_event_id(last_event_id)
        sequence = self._sequences.get(key)
        if (
            parsed is None
            or sequence is None
            or parsed[0] != sequence.epoch
            or parsed[1] > sequence.seq
        ):
            return Replay((), False)
        after = parsed[1]
        history = self._histories.get(key)
        if history is None:
            # No item recorded in this sequence (or no history at all).
            return Replay((), after == sequence.seq)
        if after < history.floor:
            return Replay((), False)
        return Replay([(e, i) for s, e, i in history.entries if s > after], True)

    async def replay(self, key: K, last_event_id: str | None) -> Replay[T]:
        """Like :meth:`replay_nowait`, as a checkpoint."""
        await trio.lowlevel.checkpoint()
        return self.replay_nowait(key, last_event_id)

    def subscribed(self, key: K) -> None:
        """Start the key's sequence, if it has none, for its subscribers."""
        if key not in self._sequences:
            self._sequences[key] = _Sequence(self._next_epoch())

    def unsubscribed(self, key: K) -> None:
        """End the key's sequence unless it has history (kept for reconnects)."""
        if key not in self._histories:
            self._sequences.pop(key, None)

    def forget(self, key: K) -> None:
        """Drop the key's history and sequence (a new one starts if needed)."""
        history = self._histories.pop(key, None)
        if history is not None:
            history.clear()
        self._sequences.pop(key, None)

    def _next_epoch(self) -> int:
        """The epoch of a new sequence: greater than every epoch before it."""
        now = time.time_ns() // 1_000_000 * 1_000_000 + self._random_digits
        self._last_epoch = epoch = max(now, self._last_epoch + 1)
        return epoch
