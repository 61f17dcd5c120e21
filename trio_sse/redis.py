"""A :class:`~trio_sse.Broadcaster` backend on Redis Streams, through coredis.

Every key is one Redis Stream (``prefix + str(key)``). :meth:`publish`
appends with ``XADD`` (trimmed to about ``maxlen`` entries) and returns the
entry's id, which becomes the event id. A reader task, in the nursery that
``async with Broadcaster(...)`` opens, reads the keys this process has local
subscribers for with one blocking ``XREAD`` (woken by Redis, never polling)
and fans the entries out through the broadcaster's memory channels, so lag
policies work as with the memory backend. ``Last-Event-ID`` replays with
``XRANGE`` after the id.

Faults: when the connection drops or Redis restarts, the reader reconnects
with backoff and resumes each key after the last id it delivered (nothing
retained is lost, nothing is delivered twice); while Redis is unreachable
:meth:`RedisBackend.publish` raises :class:`RedisUnavailable` within
``timeout`` seconds.

The client must be entered (``async with client:``) by the application; it
may be a ``coredis.Redis`` (any ``decode_responses``) or a
``coredis.RedisCluster`` (then one ``XREAD`` per hash slot)::

    client = coredis.Redis.from_url("redis://localhost:6379")
    async with client, Broadcaster(backend=RedisBackend(client)) as rooms:
        ...
"""

from __future__ import annotations

import datetime
import json
import logging
import math
import random
import time
from collections.abc import Hashable, Mapping
from typing import Any, Generic, Protocol, TypeVar

import coredis
import coredis.exceptions
import trio

from ._backend import LocalDelivery, Replay, parse_event_id, stamp
from ._errors import ConfigError, SseError
from ._event import Event

__all__ = ["Codec", "JsonCodec", "RedisBackend", "RedisUnavailable"]

logger = logging.getLogger("trio_sse.redis")

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")

# Entry fields: an Event travels as JSON of its fields, any other item as the
# codec's bytes.
_EVENT = b"e"
_VALUE = b"v"
# Errors that mean "Redis cannot be reached now" (coredis raises the builtin
# TimeoutError for a reply that does not come in time).
_UNAVAILABLE = (
    coredis.exceptions.ConnectionError,
    coredis.exceptions.BusyLoadingError,
    TimeoutError,
    OSError,
)


class RedisUnavailable(SseError):
    """Redis could not be reached (or did not answer) in time; nothing was published."""


class Codec(Protocol):
    """How items other than :class:`~trio_sse.Event` are serialised.

    The :mod:`json` module itself is a codec; so is anything with these two
    functions (msgpack, pickle for trusted peers, ...).
    """

    def dumps(self, obj: Any, /) -> str | bytes:
        """Serialise one item."""
        ...

    def loads(self, data: bytes, /) -> Any:
        """Deserialise what :meth:`dumps` returned (as bytes)."""
        ...


class JsonCodec:
    """Compact JSON (UTF-8, no NaN): the default codec."""

    def __init__(self) -> None:
        self._encoder = json.JSONEncoder(
            separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )

    def dumps(self, obj: Any, /) -> bytes:
        """Return ``obj`` as compact JSON bytes."""
        return self._encoder.encode(obj).encode()

    def loads(self, data: bytes, /) -> Any:
        """Parse JSON bytes."""
        return json.loads(data)


def _event_fields(event: Event) -> bytes:
    fields: dict[str, Any] = {}
    if event.data is not None:
        fields["data"] = event.data
    if event.id is not None:
        fields["id"] = event.id
    if event.event is not None:
        fields["event"] = event.event
    retry = event.retry
    if isinstance(retry, datetime.timedelta):
        fields["retry_us"] = (
            retry.days * 86_400 + retry.seconds
        ) * 1_000_000 + retry.microseconds
    elif retry is not None:
        fields["retry"] = retry
    if event.comment is not None:
        fields["comment"] = event.comment
    return json.dumps(fields, separators=(",", ":"), ensure_ascii=False).encode()


def _event_from(data: bytes) -> Event:
    fields = json.loads(data)
    if not isinstance(fields, dict):
        raise ValueError("an Event entry must hold a JSON object")
    micros = fields.pop("retry_us", None)
    if micros is not None:
        fields["retry"] = datetime.timedelta(microseconds=micros)
    return Event(fields.pop("data", None), **fields)


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


class _Key:
    """What the reader knows of one subscribed key."""

    __slots__ = ("cursor", "floor", "key", "since")

    def __init__(self, key: Any, since: float, floor: tuple[int, int] | None):
        self.key = key
        # The id of the last entry delivered, or None until the reader has
        # turned ``since`` (a time.monotonic() of the subscription) into an id.
        self.cursor: tuple[int, int] | None = None
        self.since = since
        # The newest id this process had published to the key by then.
        self.floor = floor


class RedisBackend(Generic[K, T]):
    """Items travel through Redis Streams, one stream per key.

    :param client: a ``coredis.Redis`` or ``coredis.RedisCluster`` client,
        entered by the application.
    :param prefix: prepended to ``str(key)`` to name each key's stream.
    :param maxlen: entries each stream retains (approximately: Redis trims
        whole nodes, so a little more may be kept) for ``Last-Event-ID``.
    :param codec: serialises items that are not :class:`~trio_sse.Event`
        (an object with ``dumps`` and ``loads``; compact JSON by default).
    :param timeout: seconds :meth:`publish` and a replay wait for Redis
        before raising :class:`RedisUnavailable`.
    :param batch: entries read per stream and per ``XREAD``; by default the
        broadcaster's ``buffer``, so a burst read at once does not by itself
        make a subscriber that keeps up lag.
    :param max_backoff: the longest wait, in seconds, between two attempts of
        the reader to reconnect.
    """

    def __init__(
        self,
        client: coredis.Redis[Any] | coredis.RedisCluster[Any],
        *,
        prefix: str = "sse:",
        maxlen: int = 10_000,
        codec: Codec | None = None,
        timeout: float = 5.0,
        batch: int | None = None,
        max_backoff: float = 2.0,
    ) -> None:
        for name, value in (("maxlen", maxlen), ("batch", batch)):
            if name == "batch" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
        for name, number in (("timeout", timeout), ("max_backoff", max_backoff)):
            if not isinstance(number, (int, float)) or not number > 0:
                raise ConfigError(f"{name} must be a number > 0, got {number!r}")
        if not isinstance(prefix, str):
            raise ConfigError(f"prefix must be a str, got {prefix!r}")
        #: The client every command goes through.
        self.client = client
        #: Prepended to ``str(key)`` to name the key's stream.
        self.prefix = prefix
        #: Approximate number of entries retained per stream.
        self.maxlen = maxlen
        #: Serialises items that are not events.
        self.codec: Codec = JsonCodec() if codec is None else codec
        self.timeout = float(timeout)
        self.batch = batch or 0
        self.max_backoff = float(max_backoff)
        self._cluster = isinstance(client, coredis.RedisCluster)
        self._local: LocalDelivery[K, T] | None = None
        self._nursery: trio.Nursery | None = None
        # Stream name -> the subscribed key it belongs to.
        self._reading: dict[bytes, _Key] = {}
        self._changed = trio.Event()
        self._read_scope: trio.CancelScope | None = None
        #: Whether the reader is connected (``False`` during an outage).
        self.connected = False
        self._connected_event = trio.Event()
        self._down_since: float | None = None
        # Stream name -> the newest id this process published to it (bounded).
        self._published: dict[bytes, tuple[int, int]] = {}

    # -- the seam --------------------------------------------------------------

    def attach(self, local: LocalDelivery[K, T]) -> None:
        """Deliver to ``local``; a backend serves a single broadcaster."""
        if self._local is not None:
            raise RuntimeError("this RedisBackend already serves a Broadcaster")
        self._local = local
        if not self.batch:
            buffer = getattr(local, "buffer", None)
            self.batch = buffer if isinstance(buffer, int) and buffer > 0 else 128

    async def start(self, nursery: trio.Nursery) -> None:
        """Start the reader task in the broadcaster's nursery."""
        if self._nursery is not None:
            raise RuntimeError("this RedisBackend is already running")
        self._nursery = nursery
        nursery.start_soon(self._reader, name="trio_sse.redis reader")
        await trio.lowlevel.checkpoint()

    async def stop(self) -> None:
        """Stop reading; the broadcaster then cancels the reader task."""
        self._nursery = None
        if self._read_scope is not None:
            self._read_scope.cancel()
        await trio.lowlevel.checkpoint()

    def publish_nowait(self, key: K, item: T) -> tuple[str, int]:
        """Always raises :exc:`trio.WouldBlock`: publishing needs the network."""
        raise trio.WouldBlock

    async def publish(self, key: K, item: T) -> str:
        """``XADD`` ``item`` to the key's stream; return the Redis Stream id.

        Every process reading the key (this one included) delivers it to its
        subscribers.

        :raises RedisUnavailable: if Redis does not take it within
            :attr:`timeout` seconds.
        """
        self._check_running("publish")
        fields: dict[bytes, str | bytes]
        if isinstance(item, Event):
            fields = {_EVENT: _event_fields(item)}
        else:
            fields = {_VALUE: self.codec.dumps(item)}
        name = self.stream_name(key)
        try:
            with trio.fail_after(self.timeout), self.client.decoding(False):
                entry_id = await self.client.xadd(
                    name,
                    fields,
                    trim_strategy=coredis.PureToken.MAXLEN,
                    threshold=self.maxlen,
                    trim_operator=coredis.PureToken.APPROXIMATELY,
                )
        except (*_UNAVAILABLE, trio.TooSlowError) as exc:
            reason = str(exc) or "timed out"
            raise RedisUnavailable(
                f"cannot publish to Redis stream {name.decode()!r}: {reason}"
            ) from exc
        if entry_id is None:  # pragma: no cover - only with NOMKSTREAM
            raise RedisUnavailable(f"Redis did not add to {name.decode()!r}")
        event_id = _text(entry_id)
        parsed = parse_event_id(event_id)
        if parsed is not None:
            published = self._published
            if published.pop(name, None) is None and len(published) >= _PUBLISHED:
                del published[next(iter(published))]
            published[name] = parsed
        return event_id

    def replay_nowait(self, key: K, last_event_id: str | None) -> Replay[T]:
        """Complete without an id; with one, raises :exc:`trio.WouldBlock`."""
        if last_event_id is None:
            return Replay((), True)
        raise trio.WouldBlock

    async def replay(self, key: K, last_event_id: str | None) -> Replay[T]:
        """Read what the key's stream retains after ``last_event_id``.

        Complete when the entry ``last_event_id`` is still in the stream;
        not complete for a malformed id, or one trimmed away (or never
        written to this key). Entries that cannot be decoded are skipped.

        :raises RedisUnavailable: if Redis does not answer in time.
        """
        if last_event_id is None:
            await trio.lowlevel.checkpoint()
            return Replay((), True)
        after = parse_event_id(last_event_id)
        if after is None:
            await trio.lowlevel.checkpoint()
            return Replay((), False)
        name = self.stream_name(key)
        items: list[tuple[str, T]] = []
        start = "{}-{}".format(*after)
        first = True
        try:
            with trio.fail_after(self.timeout), self.client.decoding(False):
                while True:
                    entries = await self.client.xrange(
                        name, start, "+", count=self.batch
                    )
                    page = list(entries)
                    if first:
                        first = False
                        if not page or parse_event_id(_text(page[0][0])) != after:
                            return Replay((), False)
                        del page[0]
                    for entry_id, fields in (entry[:2] for entry in page):
                        event_id = _text(entry_id)
                        item = self._decode(name, event_id, fields)
                        if item is not _SKIP:
                            items.append((event_id, stamp(item, event_id)))
                    if len(entries) < self.batch:
                        break
                    start = "(" + _text(entries[-1][0])
        except (*_UNAVAILABLE, trio.TooSlowError) as exc:
            reason = str(exc) or "timed out"
            raise RedisUnavailable(
                f"cannot read Redis stream {name.decode()!r}: {reason}"
            ) from exc
        return Replay(items, True)

    def subscribed(self, key: K) -> None:
        """Start reading ``key`` (from about now) without waiting."""
        self._check_running("subscribe")
        name = self.stream_name(key)
        floor = self._published.get(name)
        self._reading[name] = _Key(key, time.monotonic(), floor)
        # A new key needs a new XREAD: interrupt the one in flight.
        if self._read_scope is not None:
            self._read_scope.cancel()
        self._changed.set()

    def unsubscribed(self, key: K) -> None:
        """Stop reading ``key``; the XREAD in flight is left to finish."""
        self._reading.pop(self.stream_name(key), None)

    def forget(self, key: K) -> None:
        """Delete the key's stream in Redis (for every process)."""
        nursery = self._check_running("remove a key")
        nursery.start_soon(self._delete, self.stream_name(key))

    # -- helpers ----------------------------------------------------------------

    def stream_name(self, key: K) -> bytes:
        """The name of the Redis Stream that carries ``key``."""
        return (self.prefix + str(key)).encode()

    @property
    def reading(self) -> frozenset[K]:
        """The keys the reader reads now (those with local subscribers)."""
        return frozenset(entry.key for entry in self._reading.values())

    async def wait_connected(self) -> None:
        """Wait until the reader is connected to Redis (it reconnects by itself)."""
        await self._connected_event.wait()

    def _check_running(self, what: str) -> trio.Nursery:
        if self._nursery is None:
            raise RuntimeError(
                f"RedisBackend cannot {what} outside 'async with Broadcaster(...)': "
                "its reader task runs in the broadcaster's nursery"
            )
        return self._nursery

    async def _delete(self, name: bytes) -> None:
        try:
            with trio.fail_after(self.timeout):
                await self.client.delete([name])
        except (*_UNAVAILABLE, trio.TooSlowError) as exc:
            logger.warning("could not delete Redis stream %r: %s", name, str(exc))

    def _decode(self, name: bytes, event_id: str, fields: Mapping[Any, Any]) -> Any:
        try:
            event = fields.get(_EVENT)
            if event is not None:
                return _event_from(event)
            return self.codec.loads(fields[_VALUE])
        except Exception as exc:
            logger.warning(
                "skipping entry %s of Redis stream %r that cannot be decoded: %s",
                event_id,
                name.decode(errors="replace"),
                repr(exc),
            )
            return _SKIP

    # -- the reader ---------------------------------------------------------

    async def _reader(self) -> None:
        delay = 0.0
        while True:
            try:
                await self._read_forever()
            except (*_UNAVAILABLE, coredis.exceptions.RedisError) as exc:
                if self._down_since is None:
                    self._down_since = time.monotonic()
                    logger.warning(
                        "reading from Redis failed (%s); reconnecting, "
                        "subscribers stay open",
                        str(exc),
                    )
                else:
                    logger.debug("Redis still unreachable: %s", str(exc))
                delay = 0.0 if self.connected else min(self.max_backoff, delay * 2)
                self._set_connected(False)
                delay = max(delay, 0.05)
                await trio.sleep(delay * random.uniform(0.5, 1.0))

    def _set_connected(self, connected: bool) -> None:
        self.connected = connected
        if connected:
            self._connected_event.set()
        elif self._connected_event.is_set():
            self._connected_event = trio.Event()

    async def _read_forever(self) -> None:
        # The offset between this process's monotonic clock and Redis's
        # clock (ms), and how uncertain it is; measured on each connection.
        offset, error = await self._clock()
        if self._down_since is not None:
            logger.warning(
                "reconnected to Redis after %.1f s; resuming after the last ids read",
                time.monotonic() - self._down_since,
            )
            self._down_since = None
        self._set_connected(True)
        while True:
            if self._nursery is None:
                await trio.sleep_forever()  # stopping: wait to be cancelled
            if not self._reading:
                await self._changed.wait()
            self._changed = trio.Event()
            if any(entry.cursor is None for entry in self._reading.values()):
                offset, error = await self._clock()
            groups: dict[int, list[bytes]] = {}
            for name, entry in self._reading.items():
                if entry.cursor is None:
                    # From the subscription on: an entry added after it has
                    # an id (Redis's clock then) of at least this millisecond,
                    # and every entry this process had published before it
                    # is at most ``floor``.
                    ms = math.floor(entry.since * 1000 + offset - error)
                    cursor = (max(ms - 1, 0), _MAX_SEQ)
                    if entry.floor is not None and entry.floor > cursor:
                        cursor = entry.floor
                    entry.cursor = cursor
                groups.setdefault(self._slot(name), []).append(name)
            # One blocking XREAD per group (a cluster reads per hash slot);
            # a new key cancels them all and they start again with it.
            failed: list[BaseException] = []
            with trio.CancelScope() as scope:
                self._read_scope = scope
                try:
                    async with trio.open_nursery() as nursery:
                        for names in groups.values():
                            nursery.start_soon(self._read_group, names, failed, scope)
                finally:
                    self._read_scope = None
            if failed:
                raise failed[0]

    async def _read_group(
        self, names: list[bytes], failed: list[BaseException], scope: trio.CancelScope
    ) -> None:
        client = self.client
        try:
            while True:
                streams: dict[bytes, str] = {}
                for name in names:
                    entry = self._reading.get(name)
                    if entry is not None and entry.cursor is not None:
                        streams[name] = "{}-{}".format(*entry.cursor)
                if not streams:
                    return  # every key of the group lost its subscribers
                with client.decoding(False):
                    reply = await client.xread(streams, count=self.batch, block=0)
                if reply:
                    self._deliver(reply)
        except (*_UNAVAILABLE, coredis.exceptions.RedisError) as exc:
            failed.append(exc)
            scope.cancel()

    def _slot(self, name: bytes) -> int:
        if not self._cluster:
            return 0
        from coredis._utils import hash_slot

        return hash_slot(name)

    async def _clock(self) -> tuple[float, float]:
        if self._cluster:
            # TIME cannot be routed in a cluster: check the connection, and
            # trust this machine's clock to be synchronised within the margin.
            await self.client.ping()
            offset = time.time() * 1000 - time.monotonic() * 1000
            return offset, _CLUSTER_CLOCK_MARGIN
        before = time.monotonic()
        now = await self.client.time()
        after = time.monotonic()
        offset = now.timestamp() * 1000 - (before + after) * 500
        return offset, (after - before) * 500 + 0.5

    def _deliver(self, reply: Mapping[Any, Any]) -> None:
        local = self._local
        if local is None:  # pragma: no cover - attach() comes first
            return
        for name, entries in reply.items():
            entry = self._reading.get(name)
            if entry is None or entry.cursor is None:
                continue  # unsubscribed (or subscribed again) meanwhile
            cursor = entry.cursor
            for raw_id, fields in (e[:2] for e in entries):
                event_id = _text(raw_id)
                parsed = parse_event_id(event_id)
                if parsed is None or parsed <= cursor:
                    continue
                cursor = parsed
                item = self._decode(name, event_id, fields)
                if item is not _SKIP:
                    local.deliver(entry.key, event_id, stamp(item, event_id))
                if self._reading.get(name) is not entry:
                    break  # the last subscriber left during the delivery
            entry.cursor = cursor


_SKIP: Any = object()
# The largest sequence number of a Redis Stream id.
_MAX_SEQ = 2**64 - 1
# With a cluster, how far (ms) this machine's clock may be from Redis's.
_CLUSTER_CLOCK_MARGIN = 50.0
# How many keys' last published ids a backend remembers.
_PUBLISHED = 10_000
