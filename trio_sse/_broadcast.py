"""Keyed fan-out: :class:`Broadcaster`, :class:`BroadcastStream`, lag policies.

Every subscriber owns a bounded trio memory channel of ``(event_id, item)``
pairs. :meth:`Broadcaster.send` walks a key's channels calling
``send_nowait``, so a stuck subscriber never blocks the publisher or the
other subscribers; one that falls ``buffer`` items behind lags, and its lag
policy decides what happens (only on that exceptional branch).
"""

from __future__ import annotations

import enum
import heapq
import warnings
from collections import deque
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Hashable,
    Mapping,
)
from contextlib import AbstractAsyncContextManager
from types import MappingProxyType, TracebackType
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import attrs
import trio

from ._asgi import Scope
from ._asgi import last_event_id as request_last_event_id
from ._backend import (
    HISTORY_BYTES,
    Backend,
    MemoryBackend,
    Replay,
    parse_event_id,
)
from ._config import SseConfig
from ._driver import Sender
from ._errors import ConfigError, InvalidEvent, Lagged, SseError, UnwritableItem
from ._event import Event, encoded_size
from ._response import SseResponse, opening_response, sse_channel
from ._streams import as_event, cast, mapped
from ._websocket import WebSocketResponse

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = [
    "BroadcastStatistics",
    "BroadcastStream",
    "BroadcastStreamStatistics",
    "Broadcaster",
    "KeyStatistics",
    "LagPolicy",
    "cast_events",
]

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")
U = TypeVar("U")

_Pair = tuple[str, Any]


class LagPolicy(enum.Enum):
    """What a subscriber does when it falls ``buffer`` items behind.

    Without a policy (the default), the oldest held items are dropped to make
    room and the next ``__anext__`` raises :class:`~trio_sse.Lagged` once;
    iterating again continues with the newest items.
    """

    #: End the stream after the items it holds, so the client reconnects
    #: with ``Last-Event-ID`` and is replayed what it missed.
    END = "end"
    #: Drop the oldest held items so the subscriber keeps up with the newest;
    #: :attr:`BroadcastStream.missed` counts them.
    SKIP = "skip"


@attrs.frozen
class KeyStatistics:
    """Counters of one key, since its first subscriber created it."""

    #: Subscribers currently registered.
    subscribers: int
    #: Items delivered to the key's subscribers.
    sent: int
    #: Lag episodes: a subscriber fell ``buffer`` items behind.
    lagged: int
    #: Items the key's subscribers did not receive because they lagged.
    missed: int


@attrs.frozen
class BroadcastStatistics(Generic[K]):
    """A snapshot returned by :meth:`Broadcaster.stats`."""

    #: Per-key counters of the keys that currently have subscribers (with
    #: ``stats(top=n)``, of the ``n`` of them with the most subscribers).
    keys: Mapping[K, KeyStatistics]
    #: Subscribers currently registered, over all keys.
    subscribers: int
    #: Items published through this broadcaster, with or without subscribers.
    published: int
    #: Items delivered to keys with subscribers, over the broadcaster's life.
    sent: int
    #: Lag episodes over the broadcaster's life.
    lagged: int
    #: Items subscribers missed by lagging, over the broadcaster's life.
    missed: int
    #: Lag episodes of subscribers with :attr:`LagPolicy.SKIP`: they
    #: skipped ahead to the newest items.
    lag_skipped: int = 0
    #: Subscribers ended by :attr:`LagPolicy.END` because they lagged.
    lag_ended: int = 0
    #: :class:`~trio_sse.Lagged` exceptions raised to subscribers without a
    #: lag policy.
    lag_raised: int = 0


# Events a cast_events() memo keeps per key and function before it starts over.
_MEMO_SIZE = 4096


class _Topic:
    """One key's subscribers (send channel -> subscription) and counters."""

    __slots__ = ("ending", "lagged", "memos", "missed", "sent", "subs")

    def __init__(self) -> None:
        self.subs: dict[trio.MemorySendChannel[_Pair], _Subscription] = {}
        # cast_events() function -> event id -> its event, shared by the
        # subscribers' views (see BroadcastStream._mapped_pairs).
        self.memos: dict[Callable[[Any], Event], dict[str, Event]] = {}
        # Subscribers ended by LagPolicy.END during the current delivery.
        self.ending: list[_Subscription] = []
        self.sent = 0
        self.lagged = 0
        self.missed = 0


class _Subscription:
    """The state one subscriber's stream views share."""

    __slots__ = (
        "broadcaster",
        "closed",
        "key",
        "lagging",
        "last_id",
        "missed",
        "pending_lag",
        "pending_replay",
        "policy",
        "receive",
        "registered",
        "replay",
        "replay_complete",
        "send",
        "skip_upto",
    )

    def __init__(
        self,
        broadcaster: Broadcaster[Any, Any],
        key: Any,
        send: trio.MemorySendChannel[_Pair],
        receive: trio.MemoryReceiveChannel[_Pair],
    ) -> None:
        self.broadcaster = broadcaster
        self.key = key
        self.send = send
        self.receive = receive
        self.policy: LagPolicy | None = None
        self.registered = True
        self.closed = False
        self.last_id: str | None = None
        self.missed = 0
        # Items dropped since the last Lagged was raised (no policy).
        self.pending_lag = 0
        # True from a drop until the subscriber next takes an item.
        self.lagging = False
        # Replayed items still to yield; a deque only when there are some.
        self.replay: deque[_Pair] | None = None
        self.replay_complete = True
        # A Last-Event-ID whose replay must still be read (async backends).
        self.pending_replay: str | None = None
        # Live items with an id up to this one were replayed already.
        self.skip_upto: tuple[int, int] | None = None

    def apply_replay(self, last_event_id: str, replay: Replay[Any]) -> None:
        # An incomplete replay starts the stream live: the application sends
        # its own snapshot, which retained items would only duplicate.
        self.replay_complete = replay.complete
        if replay.complete:
            if replay.items:
                self.replay = deque(replay.items)
            upto = parse_event_id(last_event_id)
            if replay.items:
                upto = parse_event_id(replay.items[-1][0]) or upto
            self.skip_upto = upto

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.registered:
            self.broadcaster._unregister(self)
        self.send.close()
        self.receive.close()
        self.replay = None


@attrs.frozen
class BroadcastStreamStatistics:
    """A snapshot of one subscriber, from :meth:`BroadcastStream.statistics`."""

    #: The key subscribed to.
    key: Hashable
    #: Items held for this subscriber now (replayed ones included).
    current_buffer_used: int
    #: The broadcaster's ``buffer``: how many items it may hold before it lags.
    max_buffer_size: int
    #: Items it did not receive because it lagged.
    missed: int
    #: The event id of the item most recently received.
    last_id: str | None
    #: Whether the replay after its ``last_event_id`` has no gap.
    replay_complete: bool
    #: Whether the stream has ended or was closed.
    closed: bool


class BroadcastStream(trio.abc.ReceiveChannel[T]):
    """One subscriber of a :class:`Broadcaster` key: a trio receive channel.

    Like trio's ``MemoryReceiveChannel`` it offers :meth:`receive`,
    :meth:`receive_nowait` and :meth:`statistics`, plus
    :meth:`receive_batch_nowait`, which takes every item held in one call.
    It is an async iterator and an async context manager whose exit
    unsubscribes. Made by :meth:`Broadcaster.subscribe`; a stream made by
    :meth:`cast_events` is a view of the same subscription.
    """

    __slots__ = ("_failed", "_fn", "_held", "_memo", "_source", "_sub")

    def __init__(
        self,
        subscription: _Subscription,
        *,
        source: BroadcastStream[Any] | None = None,
        fn: Callable[[Any], Event] | None = None,
    ) -> None:
        self._sub = subscription
        self._source = source
        self._fn = fn
        # A view's items taken from its source but not yet returned, after
        # an item it could not map (raised first, from _failed).
        self._held: deque[_Pair] | None = None
        self._failed: UnwritableItem | None = None
        # The events fn made of this key's items, shared by every view of
        # this key with the same fn: fn runs once per item, not per view.
        self._memo: dict[str, Event] | None = None
        if fn is not None:
            topic = subscription.broadcaster._topics.get(subscription.key)
            if topic is not None:
                self._memo = topic.memos.setdefault(fn, {})

    @property
    def key(self) -> Hashable:
        """The key this stream subscribes to."""
        key: Hashable = self._sub.key
        return key

    @property
    def last_id(self) -> str | None:
        """The event id of the item most recently received (``None`` before)."""
        return self._sub.last_id

    @property
    def missed(self) -> int:
        """How many items this subscriber did not receive because it lagged."""
        return self._sub.missed

    @property
    def replay_complete(self) -> bool:
        """Whether the replay after ``last_event_id`` has no gap.

        ``True`` without a ``last_event_id``, or when the history covers it
        (the stream first yields the retained items after the id). ``False``
        when the id is unknown (another process, malformed) or older than
        what is retained: the stream then starts live, and the application
        may send a snapshot first. With a backend that reads its history over
        the network, this is known once the stream is entered with
        ``async with`` or first iterated.
        """
        return self._sub.replay_complete

    @property
    def closed(self) -> bool:
        """Whether :meth:`aclose` (or :meth:`close`) was called or the stream ended."""
        return self._sub.closed

    def statistics(self) -> BroadcastStreamStatistics:
        """Return a snapshot of this subscriber's state."""
        sub = self._sub
        held = len(sub.replay or ()) + sub.receive.statistics().current_buffer_used
        return BroadcastStreamStatistics(
            key=sub.key,
            current_buffer_used=held,
            max_buffer_size=sub.broadcaster.buffer,
            missed=sub.missed,
            last_id=sub.last_id,
            replay_complete=sub.replay_complete,
            closed=sub.closed,
        )

    def on_lag(self, policy: LagPolicy | None) -> Self:
        """Set what happens when this subscriber lags; return the stream to use.

        ``None`` restores the default: :class:`~trio_sse.Lagged` is raised.
        """
        if policy is not None and not isinstance(policy, LagPolicy):
            raise TypeError(f"policy must be a LagPolicy or None, got {policy!r}")
        self._sub.policy = policy
        return self

    def cast_events(self, fn: Callable[[T], Event]) -> BroadcastStream[Event]:
        """Return a view of this subscription that maps items to events.

        An event without an ``id`` gets the broadcaster's id of its item, so
        a reconnecting client sends it back as ``Last-Event-ID``. ``fn`` runs
        once per item of this key, not per subscriber: the views of this
        key's subscribers that use the same ``fn`` object share its events,
        so each is built and encoded once (a function made per subscriber,
        a closure for instance, runs for its subscriber alone). An item
        ``fn`` does not map to an Event raises :class:`~trio_sse.UnwritableItem` (a
        :class:`TypeError`) and is consumed; the stream goes on.
        """
        return BroadcastStream(self._sub, source=self, fn=fn)

    def close(self) -> None:
        """Unsubscribe at once (not a checkpoint); the stream then ends."""
        self._sub.close()

    async def aclose(self) -> None:
        """Unsubscribe, then checkpoint; closes even in a cancelled task."""
        self._sub.close()
        await trio.lowlevel.checkpoint()

    async def __aenter__(self) -> Self:
        sub = self._sub
        if sub.pending_replay is not None and not sub.closed:
            await self._load_replay()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._sub.close()

    def receive_nowait(self) -> T:
        """Return the next item if one is held now, else raise :exc:`trio.WouldBlock`.

        :raises trio.EndOfChannel: when the stream has ended or was closed.
        :raises ~trio_sse.Lagged: once after a lag, without a lag policy.
        """
        return self._pairs(1)[0][1]  # type: ignore[no-any-return]

    def receive_batch_nowait(self, max_items: int) -> list[T]:
        """Return up to ``max_items`` items held now (at least one), in order.

        What that many :meth:`receive_nowait` calls would return, in one
        call: a response takes every ready item this way.

        :raises trio.WouldBlock: when no item is held.
        :raises trio.EndOfChannel: when the stream has ended and holds nothing.
        :raises ~trio_sse.Lagged: once after a lag, before later items.
        """
        return [item for _, item in self._pairs(max_items)]

    async def receive(self) -> T:
        """Return the next item, waiting for one (trio channel style).

        :raises trio.EndOfChannel: when the stream has ended or was closed.
        :raises ~trio_sse.Lagged: once after a lag, without a lag policy.
        """
        sub = self._sub
        root = self._source
        if root is None:
            root = self
        else:
            if self._held or self._failed is not None:
                await trio.lowlevel.checkpoint()
                return self.receive_nowait()
            if root._source is not None:
                # A view of a view: the source maps too (and checkpoints).
                return self._map(await root.receive(), sub.last_id)  # type: ignore[return-value]
        # The subscription's own stream, read here rather than through its
        # receive(): a view waits with one coroutine frame fewer, which an
        # idle stream keeps for as long as it waits.
        if sub.pending_replay is not None and not sub.closed:
            await root._load_replay()
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            item = root.receive_nowait()
        except trio.WouldBlock:
            pass
        else:
            await trio.lowlevel.cancel_shielded_checkpoint()
            return item if root is self else self._map(item, sub.last_id)  # type: ignore[return-value]
        while True:
            try:
                pair = await sub.receive.receive()
            except (trio.EndOfChannel, trio.ClosedResourceError):
                sub.close()
                raise trio.EndOfChannel from None
            if sub.skip_upto is None or root._is_new(pair[0]):
                item = root._take(pair)
                return item if root is self else self._map(item, sub.last_id)  # type: ignore[return-value]

    def _pairs(self, max_items: int) -> list[_Pair]:
        """Take up to ``max_items`` ``(event_id, item)`` pairs held now."""
        if self._source is not None:
            return self._mapped_pairs(max_items)
        sub = self._sub
        pairs: list[_Pair] = []
        while len(pairs) < max_items:
            if (
                sub.replay
                or sub.pending_lag
                or sub.skip_upto is not None
                or sub.closed
                or sub.pending_replay is not None
            ):
                # One item through the careful path; a lag or the end is
                # raised by the next call, after the items taken.
                if pairs and ((sub.pending_lag and not sub.replay) or sub.closed):
                    break
                try:
                    pairs.append(self._next_pair())
                except (trio.WouldBlock, trio.EndOfChannel):
                    if pairs:
                        break
                    raise
                continue
            # The live channel: one loop, nothing else to check.
            receive_nowait = sub.receive.receive_nowait
            try:
                while len(pairs) < max_items:
                    pairs.append(receive_nowait())
            except trio.WouldBlock:
                pass
            except (trio.EndOfChannel, trio.ClosedResourceError):
                sub.close()
                if not pairs:
                    raise trio.EndOfChannel from None
            if pairs:
                sub.lagging = False
                sub.last_id = pairs[-1][0]
            break
        if not pairs:
            raise trio.WouldBlock
        return pairs

    def _mapped_pairs(self, max_items: int) -> list[_Pair]:
        # A view: map the source's items, keeping each item's id.
        failed = self._failed
        if failed is not None:
            self._failed = None
            raise failed
        held = self._held
        if held:
            source_pairs = [held.popleft() for _ in range(min(max_items, len(held)))]
        else:
            source_pairs = self._source._pairs(max_items)  # type: ignore[union-attr]
        out: list[_Pair] = []
        for index, (event_id, item) in enumerate(source_pairs):
            try:
                out.append((event_id, self._map(item, event_id)))
            except UnwritableItem as exc:
                rest = source_pairs[index + 1 :]
                if rest:
                    self._held = deque(rest) if not held else deque([*rest, *held])
                if not out:
                    raise
                self._failed = exc
                break
        return out

    def _map(self, item: object, event_id: str | None) -> Event:
        """The view's event for ``item``: made by ``fn`` once per key and id."""
        memo = self._memo
        if memo is None or event_id is None:
            return cast(self._fn, item, event_id)  # type: ignore[arg-type]
        event = memo.get(event_id)
        if event is None:
            event = cast(self._fn, item, event_id)  # type: ignore[arg-type]
            if len(memo) >= _MEMO_SIZE:
                memo.clear()  # the laggards make theirs again
            memo[event_id] = event
        return event

    def _next_pair(self) -> _Pair:
        sub = self._sub
        if sub.closed:
            raise trio.EndOfChannel
        if sub.pending_replay is not None:
            raise trio.WouldBlock
        replayed = sub.replay
        if replayed:
            pair = replayed.popleft()
            sub.last_id = pair[0]
            return pair
        if sub.pending_lag:
            missed, sub.pending_lag = sub.pending_lag, 0
            sub.lagging = False
            sub.broadcaster._lag_raised += 1
            raise Lagged(missed)
        while True:
            try:
                pair = sub.receive.receive_nowait()
            except (trio.EndOfChannel, trio.ClosedResourceError):
                sub.close()
                raise trio.EndOfChannel from None
            if sub.skip_upto is None or self._is_new(pair[0]):
                self._take(pair)
                return pair

    def _is_new(self, event_id: str) -> bool:
        # Live items up to the last replayed id were yielded by the replay.
        upto = self._sub.skip_upto
        parsed = parse_event_id(event_id)
        if parsed is not None and upto is not None and parsed <= upto:
            return False
        self._sub.skip_upto = None
        return True

    def _take(self, pair: _Pair) -> T:
        sub = self._sub
        sub.lagging = False
        sub.last_id = pair[0]
        return pair[1]  # type: ignore[no-any-return]

    async def _load_replay(self) -> None:
        sub = self._sub
        last_event_id = sub.pending_replay
        if last_event_id is None:
            return
        replay = await sub.broadcaster._backend.replay(sub.key, last_event_id)
        if sub.pending_replay is not None and not sub.closed:
            sub.pending_replay = None
            sub.apply_replay(last_event_id, replay)

    def __del__(self) -> None:
        # Safety net for a stream dropped without aclose(): only queue it;
        # the broadcaster closes it at its next operation (a finalizer may run
        # in the middle of a delivery, which must not see its dict change).
        sub: _Subscription | None = getattr(self, "_sub", None)
        if sub is None or self._source is not None or sub.closed:
            return
        if sub.registered:
            sub.broadcaster._dead.append(sub)
            warnings.warn(
                f"BroadcastStream of key {sub.key!r} was not closed; "
                "use 'async with' or aclose()",
                ResourceWarning,
                source=self,
                stacklevel=1,
            )

    def __repr__(self) -> str:
        sub = self._sub
        state = "closed" if sub.closed else "open"
        return f"<BroadcastStream key={sub.key!r} {state} last_id={sub.last_id!r}>"


class Broadcaster(Generic[K, T]):
    """Fan items out to every subscriber of a key.

    One per domain concept (chat rooms, job progress, ...). Each subscriber
    owns a trio memory channel of ``buffer`` items; one that falls ``buffer``
    items behind lags (item ``buffer + 1`` is the first that does not fit).

    :param buffer: each subscriber's channel size, an integer ``>= 1``.
    :param config: the :class:`~trio_sse.SseConfig` of :meth:`response` and
        :meth:`channel`.
    :param history: items retained per key for ``Last-Event-ID`` replay by
        the default :class:`~trio_sse.MemoryBackend`; another backend keeps
        its own history.
    :param history_bytes: bytes of items that history retains over all keys
        (default 32 MiB; ``None``: no byte bound); the oldest go first.
    :param backend: where items travel; the default is in process.
        A network backend needs ``async with broadcaster:``, which runs its
        tasks in a nursery.
    """

    def __init__(
        self,
        buffer: int = 128,
        config: SseConfig | None = None,
        *,
        history: int = 0,
        history_bytes: int | None = HISTORY_BYTES,
        backend: Backend[K, T] | None = None,
    ) -> None:
        if isinstance(buffer, bool) or not isinstance(buffer, int) or buffer < 1:
            raise ConfigError(f"buffer must be an integer >= 1, got {buffer!r}")
        if config is None:
            config = SseConfig()
        elif not isinstance(config, SseConfig):
            raise ConfigError(f"config must be an SseConfig, got {config!r}")
        if backend is None:
            backend = MemoryBackend(history, history_bytes=history_bytes)
        elif history or history_bytes != HISTORY_BYTES:
            name = "history" if history else "history_bytes"
            raise ConfigError(
                f"{name} is a setting of the backend: pass it to the backend, "
                "not to Broadcaster(backend=...)"
            )
        #: Each subscriber's channel size.
        self.buffer = buffer
        #: The settings of :meth:`response` and :meth:`channel`.
        self.config = config
        self._backend: Backend[K, T] = backend
        self._topics: dict[K, _Topic] = {}
        # Subscriptions whose stream was garbage collected unclosed.
        self._dead: list[_Subscription] = []
        self._published = 0
        self._sent = 0
        self._lagged = 0
        self._missed = 0
        # Lag outcomes: SKIP episodes, END endings, Lagged raised.
        self._lag_skipped = 0
        self._lag_ended = 0
        self._lag_raised = 0
        self._running: (
            tuple[AbstractAsyncContextManager[trio.Nursery], trio.Nursery] | None
        ) = None
        backend.attach(self)

    @property
    def backend(self) -> Backend[K, T]:
        """The backend items travel through."""
        return self._backend

    # -- publishing ---------------------------------------------------------

    def send(self, key: K, item: T) -> int:
        """Queue ``item`` for every subscriber of ``key``; return how many.

        Synchronous: never blocks, never awaits. The item gets the key's next
        event id (an id-less :class:`~trio_sse.Event` gets it attached once,
        so all subscribers share one event, encoded once). With no subscriber
        it returns 0 and creates nothing (the item still goes into the
        history, if any).

        :raises SseError: if the backend publishes over the network; use
            ``await broadcaster.publish(key, item)`` then.
        """
        self._check_size(item)
        try:
            _, count = self._backend.publish_nowait(key, item)
        except trio.WouldBlock:
            raise SseError(
                f"{type(self._backend).__name__} cannot publish synchronously; "
                "use 'await broadcaster.publish(key, item)'"
            ) from None
        self._published += 1
        return count

    async def publish(self, key: K, item: T) -> str:
        """Publish ``item`` to ``key`` through the backend; return its event id."""
        self._check_size(item)
        event_id = await self._backend.publish(key, item)
        self._published += 1
        return event_id

    def _check_size(self, item: object) -> None:
        """Refuse an event over ``config.max_event_bytes`` before it goes anywhere.

        The size is counted, not encoded (the event is still encoded once,
        for its first subscriber): text longer than the limit is refused
        after a length check, shorter text after counting its line ends.
        """
        limit = self.config.max_event_bytes
        if limit is None:
            return
        size = encoded_size(item, limit)
        if size is None:
            return
        if size > limit:
            raise InvalidEvent(
                f"event of at least {size:,} bytes is over "
                f"SseConfig.max_event_bytes ({limit:,}); not published"
            )

    def deliver(self, key: K, event_id: str, item: T) -> int:
        """Queue an item the backend published for the local subscribers of ``key``.

        The backend calls this; publishers call :meth:`send` or
        :meth:`publish`. Returns how many subscribers it was queued for.
        """
        if self._dead:
            self._reap()
        topic = self._topics.get(key)
        if topic is None:
            return 0
        pair = (event_id, item)
        subs = topic.subs
        # The hot path: one send_nowait per subscriber, nothing else.
        for send in subs:
            try:
                send.send_nowait(pair)
            except trio.WouldBlock:
                self._overflow(topic, subs[send], pair)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                topic.ending.append(subs[send])
        if topic.ending:
            self._end(topic)
        topic.sent += 1
        self._sent += 1
        return len(subs)

    def _overflow(self, topic: _Topic, sub: _Subscription, pair: _Pair) -> None:
        # The subscriber holds ``buffer`` unread items: this one is the first
        # that does not fit, so it lags.
        sub.missed += 1
        topic.missed += 1
        self._missed += 1
        if not sub.lagging:
            sub.lagging = True
            topic.lagged += 1
            self._lagged += 1
            if sub.policy is LagPolicy.SKIP:
                self._lag_skipped += 1
        if sub.policy is LagPolicy.END:
            self._lag_ended += 1
            topic.ending.append(sub)
            return
        # SKIP and the default drop the oldest item to make room.
        sub.receive.receive_nowait()
        sub.send.send_nowait(pair)
        if sub.policy is None:
            sub.pending_lag += 1

    def _end(self, topic: _Topic) -> None:
        # End subscribers after what they hold, outside the delivery loop.
        for sub in topic.ending:
            if sub.registered:
                sub.send.close()
                self._unregister(sub)
        topic.ending.clear()

    # -- subscribing --------------------------------------------------------

    def subscribe(
        self, key: K, *, last_event_id: str | None = None
    ) -> BroadcastStream[T]:
        """Register a subscriber of ``key`` at once and return its stream.

        No item sent after this call is missed. With a ``last_event_id``, the
        stream first yields the items the history retains after that id, then
        live ones, with no gap and no duplicate; when the history cannot
        cover the id, :attr:`BroadcastStream.replay_complete` is ``False``.
        """
        if self._dead:
            self._reap()
        send, receive = trio.open_memory_channel[_Pair](self.buffer)
        sub = _Subscription(self, key, send, receive)
        # Register first, then read the history: an item published in
        # between is both in the history and in the channel, and the stream
        # drops the second copy by its id.
        topic = self._topics.get(key)
        if topic is None:
            topic = self._topics[key] = _Topic()
            topic.subs[send] = sub
            self._backend.subscribed(key)
        else:
            topic.subs[send] = sub
        stream: BroadcastStream[T] = BroadcastStream(sub)
        if last_event_id is not None:
            try:
                replayed = self._backend.replay_nowait(key, last_event_id)
            except trio.WouldBlock:
                sub.pending_replay = last_event_id
                sub.replay_complete = False
            else:
                sub.apply_replay(last_event_id, replayed)
        return stream

    def _unregister(self, sub: _Subscription) -> None:
        sub.registered = False
        topic = self._topics.get(sub.key)
        if topic is None or topic.subs.pop(sub.send, None) is None:
            return
        if not topic.subs:
            del self._topics[sub.key]
            self._backend.unsubscribed(sub.key)

    def _reap(self) -> None:
        while self._dead:
            self._dead.pop().close()

    # -- keys ---------------------------------------------------------------

    def subscriber_count(self, key: K) -> int:
        """How many subscribers ``key`` has now."""
        if self._dead:
            self._reap()
        topic = self._topics.get(key)
        return 0 if topic is None else len(topic.subs)

    def keys(self) -> list[K]:
        """The keys that have subscribers now."""
        if self._dead:
            self._reap()
        return list(self._topics)

    def remove(self, key: K) -> int:
        """End every subscriber of ``key`` and forget its history.

        Each stream ends after the items it holds. A ``Last-Event-ID`` from
        before is then no longer covered (``replay_complete`` is ``False``).
        Returns how many subscribers were ended.
        """
        if self._dead:
            self._reap()
        self._backend.forget(key)
        topic = self._topics.get(key)
        if topic is None:
            return 0
        subs = list(topic.subs.values())
        for sub in subs:
            sub.send.close()
            self._unregister(sub)
        return len(subs)

    def stats(self, *, top: int | None = None) -> BroadcastStatistics[K]:
        """Return a snapshot of the broadcaster's counters.

        :param top: give per-key counters for the ``top`` keys with the most
            subscribers only (most first), rather than for every key: with
            many keys, a snapshot that costs little (metrics do this).
        :raises ValueError: for a negative ``top``.
        """
        if self._dead:
            self._reap()
        topics: Any = self._topics.items()
        if top is not None:
            if isinstance(top, bool) or not isinstance(top, int) or top < 0:
                raise ValueError(f"top must be an integer >= 0, got {top!r}")
            topics = heapq.nlargest(top, topics, key=_subscribers_of)
        keys = {
            key: KeyStatistics(
                subscribers=len(topic.subs),
                sent=topic.sent,
                lagged=topic.lagged,
                missed=topic.missed,
            )
            for key, topic in topics
        }
        return BroadcastStatistics(
            keys=MappingProxyType(keys),
            subscribers=sum(len(topic.subs) for topic in self._topics.values()),
            published=self._published,
            sent=self._sent,
            lagged=self._lagged,
            missed=self._missed,
            lag_skipped=self._lag_skipped,
            lag_ended=self._lag_ended,
            lag_raised=self._lag_raised,
        )

    def statistics(self) -> BroadcastStatistics[K]:
        """Return a snapshot of the broadcaster's counters (as :meth:`stats`).

        Named like trio's ``statistics()`` methods, as
        :meth:`BroadcastStream.statistics` is.
        """
        return self.stats()

    # -- responses ----------------------------------------------------------

    def response(
        self, stream: AsyncIterable[Any], *, lifetime: float | None = None
    ) -> SseResponse:
        """Return an ``SseResponse`` streaming ``stream`` with :attr:`config`.

        ``str`` items become ``Event(data=item)``; :class:`~trio_sse.Event`
        items without an id get the id of their item when ``stream`` knows it
        (a :class:`BroadcastStream`, or a :func:`chain` ending in one). Other
        items raise :class:`TypeError`: map them with
        ``stream.cast_events(fn)`` first. A lag without a lag policy ends the
        response, as :attr:`LagPolicy.END` does, so the client reconnects
        with ``Last-Event-ID``. The response closes ``stream`` when it ends.

        ``lifetime`` ends the stream after that many seconds (less up to
        10 %) with a final ``retry:``, as ``SseResponse(lifetime=...)`` does:
        pass the seconds left before the client's token expires.
        A request the server refuses (over ``config.max_streams``) closes
        ``stream`` at once; :meth:`subscribe_response` does not subscribe
        at all for it.
        """
        return SseResponse(
            cast_events(stream, as_event), config=self.config, lifetime=lifetime
        )

    def subscribe_response(
        self,
        key: K,
        *,
        last_event_id: str | None = None,
        on_lag: LagPolicy | None = None,
        cast_events: Callable[[T], Event] | None = None,
    ) -> SseResponse:
        """Return an ``SseResponse`` that subscribes to ``key`` once it streams.

        ``bc.response(bc.subscribe(key))`` subscribes when the application
        builds the response. This response subscribes only after the server
        admitted its stream (:attr:`SseConfig.max_streams
        <trio_sse.SseConfig.max_streams>`), so a refused request (or a
        ``HEAD``) never touches the broadcaster or its backend. The stream is
        then served as :meth:`response` serves it.

        :param last_event_id: where to resume; default: the request's
            ``Last-Event-ID`` header or ``lastEventId`` query parameter
            (see :func:`~trio_sse.last_event_id`).
        :param on_lag: the stream's lag policy (see
            :meth:`BroadcastStream.on_lag`).
        :param cast_events: maps items to events (see
            :meth:`BroadcastStream.cast_events`).
        """
        hash(key)  # an unhashable key fails here, not in the response
        if on_lag is not None and not isinstance(on_lag, LagPolicy):
            raise TypeError(f"on_lag must be a LagPolicy or None, got {on_lag!r}")
        if cast_events is not None and not callable(cast_events):
            raise TypeError(f"cast_events must be a function, got {cast_events!r}")
        fn = cast_events

        def open_stream(scope: Scope) -> BroadcastStream[Event]:
            resume = last_event_id
            if resume is None:
                resume = request_last_event_id(scope)
            stream = self.subscribe(key, last_event_id=resume).on_lag(on_lag)
            events = stream if fn is None else stream.cast_events(fn)
            return events.cast_events(as_event)

        return opening_response(open_stream, config=self.config)

    def websocket(
        self,
        stream: AsyncIterable[Any],
        *,
        on_message: Callable[[str], Awaitable[None]] | None = None,
    ) -> WebSocketResponse:
        """Return a ``WebSocketResponse`` streaming ``stream`` with :attr:`config`.

        The items are those :meth:`response` takes, cast the same way; the
        client's text messages go to ``on_message``. A lag ends the stream
        (close code 1000), so the client reconnects with ``lastEventId``.
        """
        return WebSocketResponse(
            cast_events(stream, as_event), config=self.config, on_message=on_message
        )

    def channel(self, fn: Callable[[Sender], Awaitable[None]]) -> SseResponse:
        """Return ``sse_channel(fn)`` with :attr:`config`: ``fn(tx)`` sends events."""
        return sse_channel(fn, config=self.config)

    # -- lifetime -----------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._running is not None:
            raise RuntimeError("this Broadcaster is already running")
        manager = trio.open_nursery()
        nursery = await manager.__aenter__()
        try:
            await self._backend.start(nursery)
        except BaseException as exc:
            nursery.cancel_scope.cancel()
            await manager.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        self._running = (manager, nursery)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._running is None:
            raise RuntimeError("this Broadcaster is not running")
        manager, nursery = self._running
        try:
            await self._backend.stop()
        finally:
            self._running = None
            for key in list(self._topics):
                topic = self._topics[key]
                for sub in list(topic.subs.values()):
                    sub.send.close()
                    self._unregister(sub)
            nursery.cancel_scope.cancel()
            await manager.__aexit__(None, None, None)


def _subscribers_of(item: tuple[Any, _Topic]) -> int:
    return len(item[1].subs)


def cast_events(
    aiterable: AsyncIterable[U], fn: Callable[[U], Event]
) -> AsyncIterator[Event]:
    """Map the items of any async iterable to events with ``fn``.

    For a :class:`BroadcastStream` this is :meth:`BroadcastStream.cast_events`.
    An event without an ``id`` gets the source's ``last_id`` when it has
    one. The result is also an async context manager whose ``aclose()``
    closes the source.
    """
    if isinstance(aiterable, BroadcastStream):
        return aiterable.cast_events(fn)
    return mapped(aiterable, fn)
