"""One stream's life, whatever carries it: the transport-neutral driver.

A :class:`StreamDriver` runs one event stream in one nursery. It reads the
source (any :class:`trio.abc.ReceiveChannel`, any async iterable, or a
``channel()`` function), batches what is ready into one write, sends
keep-alives, cuts off a client whose write does not complete in time, and
ends on disconnect, server shutdown, the source's end or a lag. What it writes
and how it notices the client leaving is its :class:`Transport`'s business:
SSE over an ASGI http response, or WebSocket messages.

The driver is a state machine with named states; every change of state goes
through :data:`TRANSITIONS` (the model is h11's ``_state.py``)::

    OPENING --OPENED--> WAITING --WRITE--> SENDING --WROTE--> WAITING
    WAITING --SOURCE_ENDED--> CLOSED           (the source ended, lagged, failed)
    OPENING | WAITING | SENDING --STOP--> STOPPING --FINAL_WRITE--> DRAINING
    DRAINING --WROTE--> CLOSED                 (the final retry is out)
    any state --DISCONNECT | STALL | FAIL--> CLOSED

Three tasks share it, none holding a flag of its own: the writer (the
driver's own body), a watcher (the client's messages, the keep-alive timer
and the write-timeout watchdog) and, for sources that are not channels, a
pump. A server shutdown arrives as a callback.
"""

from __future__ import annotations

import enum
import logging
import math
import random
from collections.abc import AsyncIterable, Awaitable, Callable, Mapping
from typing import Any, Final, Protocol, final

import trio

from ._config import SseConfig
from ._errors import InvalidEvent, Lagged, UnwritableItem
from ._event import Event, comment, encode_item
from ._pacing import Pacer
from ._shutdown import ShutdownSignal

__all__ = [
    "TRANSITIONS",
    "End",
    "Sender",
    "State",
    "StreamDriver",
    "Transport",
    "TransportCounters",
    "Trigger",
]

logger = logging.getLogger("trio_sse")

# Size of the memory channel between a pump task and the writer: small, so a
# fast producer feels backpressure soon, large enough for batching to help.
_PUMP_BUFFER = 16
# Items taken per batch read of a source that offers one.
_BATCH = 64
# The transport's closing message gets at most this long, shielded.
_CLOSE_TIMEOUT = 1.0
# What a failed write raises when the client has gone.
_GONE = (OSError, trio.BrokenResourceError, trio.ClosedResourceError)


class State(enum.Enum):
    """Where a stream is in its life."""

    __hash__ = object.__hash__  # identity: the table is read on every write

    #: The transport is being opened (headers sent, WebSocket accepted).
    OPENING = "opening"
    #: Waiting for events (or for a keep-alive to fall due).
    WAITING = "waiting"
    #: A write is in progress.
    SENDING = "sending"
    #: Asked to stop (server shutdown): the final write comes next.
    STOPPING = "stopping"
    #: The final write is in progress.
    DRAINING = "draining"
    #: Over; :attr:`StreamDriver.end` says why.
    CLOSED = "closed"


class Trigger(enum.Enum):
    """What moves a stream from one state to the next."""

    __hash__ = object.__hash__

    #: The transport is open.
    OPENED = "opened"
    #: The writer starts a write (events, or a keep-alive).
    WRITE = "write"
    #: A write completed.
    WROTE = "wrote"
    #: The source has nothing more to give (ended, lagged or failed).
    SOURCE_ENDED = "source ended"
    #: The server begins to shut down, or the stream's lifetime is over.
    STOP = "stop"
    #: The writer starts the final write of a stopping stream.
    FINAL_WRITE = "final write"
    #: The client went away.
    DISCONNECT = "disconnect"
    #: A write did not complete within the write timeout.
    STALL = "stall"
    #: The application's handler of client messages failed.
    FAIL = "fail"


class End(enum.Enum):
    """Why a stream ended."""

    #: The source ended (an END lag policy ends it too).
    ENDED = "ended"
    #: The source raised :exc:`~trio_sse.Lagged` (no lag policy).
    LAGGED = "lagged"
    #: The source, a ``channel()`` function or a message handler raised.
    FAILED = "failed"
    #: The client went away.
    DISCONNECTED = "disconnected"
    #: The client stopped reading: a write exceeded the write timeout.
    TIMED_OUT = "timed out"
    #: The server shut down.
    SHUTDOWN = "shutdown"
    #: The stream reached its maximum lifetime (the client reconnects).
    LIFETIME = "lifetime"


_S, _T = State, Trigger

#: ``TRANSITIONS[state][trigger]`` is the next state. A trigger missing from
#: a state's row cannot happen there (the driver raises if it does); a closed
#: stream ignores every trigger.
TRANSITIONS: Final[Mapping[State, Mapping[Trigger, State]]] = {
    _S.OPENING: {
        _T.OPENED: _S.WAITING,
        _T.STOP: _S.STOPPING,
        _T.DISCONNECT: _S.CLOSED,
        _T.STALL: _S.CLOSED,
        _T.FAIL: _S.CLOSED,
    },
    _S.WAITING: {
        _T.WRITE: _S.SENDING,
        _T.SOURCE_ENDED: _S.CLOSED,
        _T.STOP: _S.STOPPING,
        _T.DISCONNECT: _S.CLOSED,
        _T.FAIL: _S.CLOSED,
    },
    _S.SENDING: {
        _T.WROTE: _S.WAITING,
        _T.STOP: _S.STOPPING,
        _T.DISCONNECT: _S.CLOSED,
        _T.STALL: _S.CLOSED,
        _T.FAIL: _S.CLOSED,
    },
    _S.STOPPING: {
        # A write or the opening in progress when the stop came completes.
        _T.OPENED: _S.STOPPING,
        _T.WROTE: _S.STOPPING,
        _T.STOP: _S.STOPPING,
        _T.FINAL_WRITE: _S.DRAINING,
        _T.DISCONNECT: _S.CLOSED,
        _T.STALL: _S.CLOSED,
        _T.FAIL: _S.CLOSED,
    },
    _S.DRAINING: {
        _T.WROTE: _S.CLOSED,
        _T.STOP: _S.DRAINING,
        _T.DISCONNECT: _S.CLOSED,
        _T.STALL: _S.CLOSED,
        _T.FAIL: _S.CLOSED,
    },
    _S.CLOSED: {},
}

# Why a stream ends, by the trigger that closed it (the others carry their
# own reason: SOURCE_ENDED the source's, WROTE in DRAINING the stop's).
_END_OF: Final[Mapping[Trigger, End]] = {
    _T.DISCONNECT: End.DISCONNECTED,
    _T.STALL: End.TIMED_OUT,
    _T.FAIL: End.FAILED,
}


class TransportCounters:
    """Running totals of the streams of one transport (SSE or WebSocket).

    Plain integers that the stream driver adds to as it goes (no lock, no
    allocation: a stream's writes cost an addition each) and that a reader
    such as :class:`trio_sse.metrics.Metrics` reads when it is asked.
    Held by a :class:`~trio_sse.StreamCounters`.
    """

    __slots__ = ("bytes", "ends", "events", "opened", "refused")

    def __init__(self) -> None:
        #: Streams started.
        self.opened = 0
        #: Streams ended, by why they ended (every :class:`End`, from 0).
        self.ends: dict[End, int] = dict.fromkeys(End, 0)
        #: Items of the streams written (events, ``str`` or bytes blocks);
        #: keep-alive comments and ``retry:``-only blocks are not counted.
        #: Counted when handed to the server, as :attr:`bytes` is.
        self.events = 0
        #: Bytes written, keep-alives and ``retry:`` blocks included; counted
        #: when handed to the server (a write a departed client never reads
        #: is counted too).
        self.bytes = 0
        #: Streams refused before they started: over ``SseConfig.max_streams``.
        self.refused = 0

    @property
    def open(self) -> int:
        """Streams started and not yet ended."""
        return self.opened - sum(self.ends.values())

    def __repr__(self) -> str:
        return (
            f"<TransportCounters open={self.open} events={self.events}"
            f" bytes={self.bytes} refused={self.refused}>"
        )


class Transport(Protocol):
    """What carries a stream to one client: SSE over http, or a WebSocket."""

    async def open(self) -> None:
        """Start the response (headers, or the WebSocket accept)."""

    async def write(self, data: bytes) -> bool | None:
        """Write complete event blocks (or comment lines).

        Raises :exc:`OSError`, :exc:`trio.BrokenResourceError` or
        :exc:`trio.ClosedResourceError` when the client has gone. Returns
        ``False`` if the write was not a checkpoint (the driver then
        checkpoints after it); ``True`` or ``None`` if it was.
        """

    async def receive(self) -> str | None:
        """Wait for the client: a text message it sent, or ``None`` once it left."""

    async def close(self, end: End) -> None:
        """End the response (the final body message, or the close frame)."""


@final
class Sender:
    """The sending end handed to a ``channel()`` function.

    ``await tx.send(event)`` queues one event for the client; it waits while
    the response's small buffer is full, so a function that produces faster
    than the client reads is slowed down to the client's pace.
    """

    __slots__ = ("_tx",)

    def __init__(self, tx: trio.MemorySendChannel[bytes]) -> None:
        self._tx = tx

    async def send(self, event: Event | str | bytes) -> None:
        """Send an :class:`~trio_sse.Event`, a ``str`` (sent as
        ``Event(data=s)``) or bytes holding complete event blocks.

        :raises TypeError: for any other object.
        :raises ~trio_sse.InvalidEvent: for bytes that do not end with a
            blank line.
        :raises trio.BrokenResourceError: if the response has ended.
        """
        try:
            await self._tx.send(encode_item(event))
        except trio.ClosedResourceError:
            raise trio.BrokenResourceError("the SSE response has ended") from None


#: A ``channel()`` function: ``async def fn(tx: Sender) -> None``.
ChannelFunction = Callable[[Sender], Awaitable[None]]
#: A client message handler: ``async def on_message(text: str) -> None``.
MessageHandler = Callable[[str], Awaitable[None]]


def is_direct(stream: object) -> bool:
    """Whether the writer reads ``stream`` itself rather than through a pump.

    Trio receive channels are: their ``receive()`` loses nothing when
    cancelled (a keep-alive or shutdown cancels the writer's wait). Anything
    else (async generators, anyio streams) is read by a task of its own, so
    a keep-alive never cancels it.
    """
    return isinstance(stream, trio.abc.ReceiveChannel)


class StreamDriver:
    """Run one stream over one transport, from opening to the end.

    :param source: a :class:`trio.abc.ReceiveChannel` or async iterable of
        events (``Event``, ``str`` or bytes blocks); ignored with ``function``.
    :param function: a ``channel()`` function, run in the stream's nursery.
    :param on_message: called with each text message the client sends.
    :param shutdown: the server's shutdown signal, if any.
    :param pacer: shares one timer between the streams a server paces
        (see ``SseConfig.write_delay``).
    :param counters: the totals this stream adds to, if any.
    """

    __slots__ = (
        "_config",
        "_counters",
        "_ended_as",
        "_ends_at",
        "_function",
        "_lifetime",
        "_limit",
        "_logged_item",
        "_nursery_scope",
        "_on_message",
        "_pacer",
        "_pump_scope",
        "_shutdown",
        "_source",
        "_source_closed",
        "_source_end",
        "_stop_end",
        "_transport",
        "_wait_scope",
        "_write_checkpointed",
        "end",
        "last_write",
        "state",
        "write_started",
    )

    def __init__(
        self,
        transport: Transport,
        source: object,
        config: SseConfig,
        *,
        function: ChannelFunction | None = None,
        on_message: MessageHandler | None = None,
        shutdown: ShutdownSignal | trio.Event | None = None,
        lifetime: float | None = None,
        pacer: Pacer | None = None,
        counters: TransportCounters | None = None,
    ) -> None:
        self._transport = transport
        self._pacer = pacer
        self._source = source
        self._config = config
        self._function = function
        self._on_message = on_message
        self._shutdown = shutdown
        self._limit = config.coalesce_bytes
        #: The current :class:`State`.
        self.state = State.OPENING
        #: Why the stream ended (set when it reaches ``CLOSED``).
        self.end: End | None = None
        #: When the write in progress started (``None``: no write in progress).
        self.write_started: float | None = None
        #: When the last write completed (or the stream started).
        self.last_write = 0.0
        self._source_end: End | None = None
        # How the source's end reads when its channel ends (a pump sets it).
        self._ended_as = End.ENDED
        self._source_closed = False
        self._logged_item = False
        self._nursery_scope: trio.CancelScope | None = None
        self._wait_scope: trio.CancelScope | None = None
        # Whether the last write was a checkpoint (see Transport.write).
        self._write_checkpointed = True
        # Made when a pump is started (most streams read their channel
        # directly and never need one).
        self._pump_scope: trio.CancelScope | None = None
        if lifetime is None:
            lifetime = config.max_lifetime
        # The stream's lifetime, shortened by up to 10 % at random so that
        # the clients of a fleet do not all reconnect at once.
        self._lifetime = (
            None if lifetime is None else lifetime * (1 - 0.1 * random.random())
        )
        self._ends_at = math.inf
        # Why the stream stops (SHUTDOWN or LIFETIME), once STOP came.
        self._stop_end = End.SHUTDOWN
        self._counters = counters

    # -- the state machine ----------------------------------------------------

    def fire(self, trigger: Trigger, end: End | None = None) -> State:
        """Apply ``trigger``: move to the next state and act on the change."""
        old = self.state
        if old is State.CLOSED:
            return old
        try:
            new = TRANSITIONS[old][trigger]
        except KeyError:
            raise RuntimeError(
                f"stream driver: {trigger.name} cannot happen in {old.name}"
            ) from None
        self.state = new
        if new is State.CLOSED:
            self._closed(trigger, end)
        elif trigger is Trigger.STOP and old is not State.STOPPING:
            if self._pump_scope is not None:
                self._pump_scope.cancel()
            if old is State.WAITING and self._wait_scope is not None:
                self._wait_scope.cancel()
        return new

    def _closed(self, trigger: Trigger, end: End | None) -> None:
        self.end = end if end is not None else _END_OF.get(trigger, End.ENDED)
        if self.end is End.TIMED_OUT:
            logger.info(
                "SSE client did not read for %s s; ending its stream",
                self._config.write_timeout,
            )
        if self._nursery_scope is not None:
            self._nursery_scope.cancel()

    # -- running --------------------------------------------------------------

    async def run(self) -> None:
        """Serve the stream until it ends; close the source and the transport."""
        tx: trio.MemorySendChannel[bytes] | None = None
        rx: trio.MemoryReceiveChannel[bytes] | None = None
        signal = self._shutdown if isinstance(self._shutdown, ShutdownSignal) else None
        opened = False
        if self._counters is not None:
            self._counters.opened += 1
        try:
            async with trio.open_nursery() as nursery:
                self._nursery_scope = nursery.cancel_scope
                self.last_write = trio.current_time()
                if self._lifetime is not None:
                    self._ends_at = self.last_write + self._lifetime
                if self._on_message is None:
                    nursery.start_soon(self._watch, True)
                else:
                    nursery.start_soon(self._watch, False)
                    nursery.start_soon(self._read_messages, self._on_message)
                source: Any
                if self._function is None and is_direct(self._source):
                    source = self._source
                else:
                    tx, rx = trio.open_memory_channel[bytes](_PUMP_BUFFER)
                    self._pump_scope = trio.CancelScope()
                    nursery.start_soon(self._pump, tx, self._pump_scope)
                    source = rx
                if signal is not None:
                    # A callback, not a task: one waiting task fewer per stream.
                    signal.add_callback(self._on_shutdown)
                elif isinstance(self._shutdown, trio.Event):
                    nursery.start_soon(self._watch_shutdown, self._shutdown)
                opened = True
                try:
                    await self._transport.open()
                except _GONE as exc:
                    logger.debug("SSE client gone before the stream opened: %r", exc)
                    self.fire(Trigger.DISCONNECT)
                else:
                    self.fire(Trigger.OPENED)
                    reset = b""
                    try:
                        reset = await self._replay_reset()
                    except Exception as exc:
                        self._source_end = self._source_failed(exc, self._source)
                    await self._write_loop(source, rx is None, reset)
                nursery.cancel_scope.cancel()
        finally:
            # Cancelled from outside (the server's own nursery): the client
            # is as good as gone.
            self.fire(Trigger.DISCONNECT)
            if self._counters is not None:
                self._counters.ends[self.end or End.DISCONNECTED] += 1
            if signal is not None:
                signal.remove_callback(self._on_shutdown)
            for end in (tx, rx):
                if end is not None:
                    end.close()
            try:
                await self._close_source()
            finally:
                if opened:
                    await self._close_transport()

    async def _close_transport(self) -> None:
        with trio.CancelScope(shield=True) as scope:
            scope.deadline = trio.current_time() + _CLOSE_TIMEOUT
            try:
                await self._transport.close(self.end or End.ENDED)
            except Exception as exc:
                logger.debug("SSE final message failed, client gone: %r", exc)

    # -- the writer ------------------------------------------------------------

    def _opening(self) -> bytes:
        retry = self._config.retry
        return comment() if retry is None else Event(retry=retry).encode()

    async def _replay_reset(self) -> bytes:
        """The reset event, when the source could not replay what was missed.

        A source that replays (a :class:`~trio_sse.BroadcastStream`) knows
        whether the client's ``Last-Event-ID`` was still retained once it is
        entered; with ``SseConfig.replay_reset_event`` set, a client whose
        id was trimmed away (or is unknown) is told so before the live
        events, so that it refetches its state.
        """
        name = self._config.replay_reset_event
        source = self._source
        if name is None or not hasattr(source, "replay_complete"):
            return b""
        enter = getattr(source, "__aenter__", None)
        if enter is not None:
            await enter()  # a backend that replays over the network reads now
        if source.replay_complete:
            return b""
        return Event("", event=name).encode()

    def _encode(self, item: object) -> bytes | None:
        """The bytes of one item, or ``None`` (logged once) if it cannot be written."""
        try:
            return encode_item(item)
        except (TypeError, InvalidEvent) as exc:
            self._unwritable(exc)
            return None

    def _unwritable(self, exc: Exception) -> None:
        if not self._logged_item:
            self._logged_item = True
            logger.warning(
                "SSE stream %r: skipping an item it cannot write (%s); "
                "later ones are skipped silently",
                self._source,
                exc,
            )

    def _source_failed(self, exc: Exception, what: object) -> End:
        if isinstance(exc, Lagged):
            logger.info("SSE stream %r lagged (%s); ending it", what, exc)
            return End.LAGGED
        logger.error("SSE stream %r failed; ending it", what, exc_info=exc)
        return End.FAILED

    def _collect(
        self,
        batch: Callable[[int], Any] | None,
        receive_nowait: Callable[[], Any],
        pending: list[bytes],
        size: int,
        encode: bool,
    ) -> int:
        """Append what the source holds now to ``pending``; return the new size.

        Reads while ``size`` is under the coalescing limit, through the
        source's batch read when it has one; notes the source's end in
        ``_source_end``.
        """
        limit = self._limit
        append = pending.append
        while size < limit:
            try:
                items = batch(_BATCH) if batch is not None else (receive_nowait(),)
            except trio.WouldBlock:
                return size
            except (trio.EndOfChannel, trio.ClosedResourceError):
                self._source_end = self._ended_as
                return size
            except UnwritableItem as exc:
                self._unwritable(exc)
                continue
            except Exception as exc:
                self._source_end = self._source_failed(exc, self._source)
                return size
            for item in items:
                data = self._encode(item) if encode else item
                if data:
                    append(data)
                    size += len(data)
        return size

    async def _receive(self, source: Any, pending: list[bytes], encode: bool) -> int:
        """Wait for the next item; append it; return the new size (0 or its length)."""
        while True:
            try:
                item = await source.receive()
            except (trio.EndOfChannel, trio.ClosedResourceError):
                self._source_end = self._ended_as
                return 0
            except UnwritableItem as exc:
                self._unwritable(exc)
                continue
            except Exception as exc:
                self._source_end = self._source_failed(exc, self._source)
                return 0
            data = self._encode(item) if encode else item
            if data:
                pending.append(data)
                return len(data)

    async def _write_loop(self, source: Any, encode: bool, first: bytes) -> None:
        """The writer: batch what is ready into one write; wait; keep alive.

        It waits for the source inside a cancel scope that spans many
        events, cancelled only while it waits: by the watcher when a
        keep-alive is due, and by a shutdown. No cancel scope is made and no
        deadline moves per event.
        """
        keep_alive = comment()
        delay = self._config.write_delay
        pacer = self._pacer
        sleep_until = trio.sleep_until if pacer is None else pacer.sleep_until
        behind = 0  # writes in a row after which events were waiting
        paced = False  # behind: a write_delay between two writes
        wrote = -math.inf  # when the last write ended
        pending = [self._opening() + first]
        size = len(pending[0])
        # Chunks of ``pending`` that hold no item (the opening, a keep-alive).
        extra = 0 if first else 1
        receive_nowait = getattr(source, "receive_nowait", None)
        batch = getattr(source, "receive_batch_nowait", None)
        # Whether the source was just read, with no checkpoint since (so
        # nothing new can be in it).
        collected = False
        while True:
            with trio.CancelScope() as wait_scope:
                self._wait_scope = wait_scope
                while True:
                    if (
                        not collected
                        and self._source_end is None
                        and receive_nowait is not None
                    ):
                        size = self._collect(
                            batch, receive_nowait, pending, size, encode
                        )
                    collected = False
                    if wait_scope.cancel_called:
                        break  # never write inside a cancelled scope
                    if self.state is State.STOPPING:
                        self._wait_scope = None
                        await self._final_write(pending, len(pending) - extra)
                        return
                    if paced and (
                        size < self._limit if pending else self._source_end is None
                    ):
                        due = wrote + delay
                        if trio.current_time() < due:
                            # Behind: wake once, at the end of this
                            # write_delay, rather than on each event, and
                            # write what came meanwhile in one write.
                            await sleep_until(due)
                            continue
                    if pending:
                        body = pending[0] if len(pending) == 1 else b"".join(pending)
                        events = len(pending) - extra
                        pending.clear()
                        size = extra = 0
                        if not await self._write(body, events):
                            return
                        wrote = self.last_write
                        if paced and len(body) < self._limit:
                            # It took all the source held: sleep until the
                            # next write is due.
                            await sleep_until(wrote + delay)
                            continue
                        if not self._write_checkpointed:
                            # The kernel took the write at once (see
                            # trio_sse.serve): let the others run, which
                            # shows whether events came meanwhile.
                            await trio.lowlevel.checkpoint()
                        if (
                            delay
                            and receive_nowait is not None
                            and self._source_end is None
                        ):
                            size = self._collect(
                                batch, receive_nowait, pending, size, encode
                            )
                            collected = True
                            # Events came during this write and the one
                            # before: the stream is behind.
                            behind = behind + 1 if pending else 0
                            paced = paced or behind > 1
                        continue
                    if self._source_end is not None:
                        self.fire(Trigger.SOURCE_ENDED, self._source_end)
                        return
                    waited = trio.current_time()
                    size = await self._receive(source, pending, encode)
                    if paced and trio.current_time() - waited >= delay:
                        # Nothing came for a whole write_delay: the stream
                        # keeps up again, and writes each event at once.
                        paced = False
                        behind = 0
            self._wait_scope = None
            if self.state is State.CLOSED:
                return
            if not pending and self.state is State.WAITING:
                # The wait was cancelled for a keep-alive.
                pending.append(keep_alive)
                size = len(keep_alive)
                extra = 1

    async def _write(self, body: bytes, events: int) -> bool:
        """One write of ``events`` items; ``False`` when the stream is over."""
        if self.fire(Trigger.WRITE) is not State.SENDING:
            return self.state is not State.CLOSED
        return await self._send(body, events)

    async def _final_write(self, pending: list[bytes], events: int) -> None:
        config = self._config
        if self._stop_end is End.LIFETIME:
            # Come back soon (the lifetime's jitter spreads the clients).
            retry: float | None = config.retry if config.retry is not None else 0.0
        else:
            retry = config.shutdown_retry
        if retry is not None:
            pending.append(Event(retry=retry).encode())
        self.fire(Trigger.FINAL_WRITE)
        if pending:
            await self._send(b"".join(pending), events)
        else:
            self.fire(Trigger.WROTE, self._stop_end)

    async def _send(self, body: bytes, events: int) -> bool:
        counters = self._counters
        if counters is not None:
            counters.events += events
            counters.bytes += len(body)
        now = trio.current_time()
        self.write_started = now
        try:
            checkpointed = await self._transport.write(body)
        except _GONE as exc:
            logger.debug("SSE client gone: %r", exc)
            self.fire(Trigger.DISCONNECT)
            return False
        finally:
            self.write_started = None
        self._write_checkpointed = checkpointed is not False
        self.last_write = trio.current_time()
        return self.fire(Trigger.WROTE, self._stop_end) is not State.CLOSED

    # -- the watcher ------------------------------------------------------------

    def _next_check(self, now: float) -> float | None:
        """Act on due timers; return when to look again (``None``: stalled)."""
        config = self._config
        keep_alive = config.keep_alive or None
        limit = config.write_timeout
        if now >= self._ends_at:
            self._ends_at = math.inf
            if self.state is not State.STOPPING:
                self._stop_end = End.LIFETIME
                self.fire(Trigger.STOP)
        started = self.write_started
        if started is not None:
            # A write in progress: the watchdog. Look again at the latest one
            # keep-alive period after the write, to time the next keep-alive.
            due = math.inf if limit is None else started + limit
            if now >= due:
                return None
            if keep_alive is not None:
                due = min(due, now + keep_alive)
            return min(due, self._ends_at)
        check_at = math.inf if limit is None else now + limit
        if keep_alive is not None:
            due = self.last_write + keep_alive
            if now >= due:
                if self.state is State.WAITING and self._wait_scope is not None:
                    self._wait_scope.cancel()
                due = now + keep_alive
            check_at = min(check_at, due)
        return min(check_at, self._ends_at)

    async def _watch(self, receive: bool) -> None:
        """Time keep-alives and the write timeout; with ``receive``, also
        wait for the client to leave.

        The write timeout is watched here, not by a cancel scope around the
        write: servers such as Hypercorn's trio worker write inside a
        shielded scope, which would hold off the cancellation until the
        stuck write returns. This task ends the stream on time.
        """
        try:
            while True:
                check_at = self._next_check(trio.current_time())
                if check_at is None:
                    self.fire(Trigger.STALL)
                    return
                with trio.move_on_at(check_at):
                    if not receive:
                        await trio.sleep_forever()
                    while await self._client_message() is not None:
                        pass
                    return
        finally:
            # A write stuck in the server's shielded socket write: free the
            # subscription now rather than when that write returns.
            if self.state is State.CLOSED and self.write_started is not None:
                self._close_source_now()

    async def _client_message(self) -> str | None:
        """The client's next message; ``None`` (and DISCONNECT) once it left."""
        try:
            message = await self._transport.receive()
        except Exception as exc:
            logger.debug("receive() failed, client gone: %r", exc)
            message = None
        if message is None:
            self.fire(Trigger.DISCONNECT)
        return message

    async def _read_messages(self, on_message: MessageHandler) -> None:
        """Hand each client message to ``on_message``; notice the client leaving."""
        while True:
            message = await self._client_message()
            if message is None:
                return
            try:
                await on_message(message)
            except Exception:
                logger.exception("on_message handler %r failed; closing", on_message)
                self.fire(Trigger.FAIL)
                return

    # -- the pump, shutdown and the source ----------------------------------------

    async def _pump(
        self, tx: trio.MemorySendChannel[bytes], scope: trio.CancelScope
    ) -> None:
        """Read an async iterable (or run the channel function) into ``tx``."""
        function = self._function
        try:
            with scope:
                try:
                    if function is not None:
                        await function(Sender(tx))
                    else:
                        await self._pump_items(tx, self._source)  # type: ignore[arg-type]
                except Exception as exc:
                    what = function if function is not None else self._source
                    # The writer ends the stream this way once it has
                    # written what the pump queued before the failure.
                    self._ended_as = self._source_failed(exc, what)
                finally:
                    await self._close_source()
        finally:
            tx.close()

    async def _pump_items(
        self, tx: trio.MemorySendChannel[bytes], stream: AsyncIterable[object]
    ) -> None:
        # The iterator checkpoints (or is about to block) at each step
        # already: a queue with room takes the item without a second one.
        send, send_nowait = tx.send, tx.send_nowait
        iterator = aiter(stream)
        try:
            while True:
                try:
                    item = await anext(iterator)
                except StopAsyncIteration:
                    return
                except UnwritableItem as exc:
                    self._unwritable(exc)
                    continue
                data = self._encode(item)
                if not data:
                    continue
                try:
                    send_nowait(data)
                except trio.WouldBlock:
                    await send(data)
        finally:
            if iterator is not stream:
                await _aclose(iterator)

    async def _watch_shutdown(self, shutdown: trio.Event) -> None:
        """Stop cleanly when a plain :class:`trio.Event` is set."""
        await shutdown.wait()
        self._on_shutdown()

    def _on_shutdown(self) -> None:
        self.fire(Trigger.STOP)

    def _close_source_now(self) -> None:
        """Close a channel source at once (not a checkpoint), if it can."""
        close = getattr(self._source, "close", None)
        if close is not None and not self._source_closed:
            close()

    async def _close_source(self) -> None:
        """Close the source once, with ``aclose()``."""
        if self._source_closed:
            return
        self._source_closed = True
        await _aclose(self._source)


async def _aclose(target: object) -> None:
    aclose = getattr(target, "aclose", None)
    if aclose is None:
        return
    try:
        await aclose()
    except Exception:
        logger.exception("closing SSE stream %r failed", target)
