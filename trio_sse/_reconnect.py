"""What the HTTP and WebSocket clients share: the EventSource reconnection model.

A source hands out the :class:`~trio_sse.MessageEvent` of one stream,
connecting and reconnecting as needed: the first reconnection waits the
server's ``retry:`` (as a browser does), further ones back off with jitter,
and each resumes after the last event id handed out. Subclasses supply the
connection: :class:`trio_sse.client.EventSource` over httpx,
:class:`trio_sse.websocket.WebSocketSource` over trio-websocket.
"""

from __future__ import annotations

import logging
import math
import random
from collections import deque
from collections.abc import Collection
from typing import TYPE_CHECKING, Generic, TypeVar

import trio

from ._errors import SseError
from ._parser import EventParser, MessageEvent

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["ReconnectingSource", "backoff_delay"]

# The shortest wait a backoff grows from (a retry of 0 still spreads out).
_MIN_BACKOFF = 0.1
# Beyond this many doublings the ceiling is max_delay anyway.
_MAX_EXPONENT = 64

E = TypeVar("E", bound=SseError)


def backoff_delay(
    base: float, failures: int, max_delay: float, rng: random.Random
) -> float:
    """Return how many seconds to wait before the next reconnection attempt.

    ``base`` is the reconnection time (the server's ``retry:`` or the
    client's default) and ``failures`` the number of consecutive reconnections
    so far, this one included: 1 after a stream ended or dropped, more when
    attempts keep failing. The first reconnection waits exactly ``base``, as
    a browser does. Each further one waits a random time in the upper half of
    ``base * 2 ** (failures - 1)`` (from at least 0.1 s), so clients that lost
    the same server spread out. Everything is capped at ``max_delay``.
    """
    if failures <= 1:
        return min(base, max_delay)
    exponent = min(failures - 1, _MAX_EXPONENT)
    ceiling = min(max_delay, max(base, _MIN_BACKOFF) * 2.0**exponent)
    return rng.uniform(ceiling / 2, ceiling)


class ReconnectingSource(Generic[E]):
    """The state and iteration every reconnecting source shares.

    A subclass implements :attr:`connected`, ``_connect()`` (which starts
    with ``await self._wait_to_reconnect()``) and ``_receive()``, which
    feed ``self._parser`` and ``self._pending``.
    """

    _logger: logging.Logger

    def __init__(
        self,
        url: str,
        *,
        last_event_id: str | None,
        retry: float,
        max_retry: float,
        timeout: float | None,
        retry_statuses: Collection[int],
        max_reconnects: int | None,
        max_event_size: int | None,
        rng: random.Random,
    ) -> None:
        #: The URL of the stream.
        self.url = url
        self._timeout = math.inf if timeout is None else timeout
        self._max_retry = max_retry
        self._retry_statuses = frozenset(retry_statuses)
        self._max_reconnects = max_reconnects
        self._rng = rng
        self._retry = retry
        self._committed_id = last_event_id or ""
        self._delivered_id = self._committed_id
        #: How many times the client reconnected (attempts after the first).
        self.reconnects = 0
        #: The error behind the latest reconnection, or ``None`` when the
        #: server ended the stream cleanly (or no reconnection happened yet).
        self.last_error: E | None = None
        self._failures = 0
        self._started = False
        self._done = False
        self._closed = False
        # One parser for the source's whole life: it keeps the last event id
        # and the server's ``retry`` across connections.
        self._parser = EventParser(
            last_event_id=self._committed_id, max_event_size=max_event_size
        )
        self._pending: deque[MessageEvent] = deque()

    @property
    def last_event_id(self) -> str:
        """The id of the latest event handed out (sent back on reconnecting)."""
        return self._delivered_id if self._pending else self._committed_id

    @property
    def retry(self) -> float:
        """The reconnection time in seconds: the server's ``retry:`` or the default."""
        return self._retry

    @property
    def connected(self) -> bool:
        """Whether a connection is open and being read."""
        raise NotImplementedError

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> MessageEvent:
        if self._closed:
            raise trio.ClosedResourceError(f"this {type(self).__name__} was closed")
        while not self._pending:
            if self._done:
                raise StopAsyncIteration
            if self.connected:
                await self._receive()
            else:
                await self._connect()
        event = self._pending.popleft()
        self._delivered_id = event.last_event_id
        return event

    async def _connect(self) -> None:
        raise NotImplementedError

    async def _receive(self) -> None:
        raise NotImplementedError

    async def _wait_to_reconnect(self) -> bool:
        """Before a connection attempt: back off, or give up (``False``).

        The first attempt goes at once. Later ones wait
        :func:`backoff_delay`; past ``max_reconnects`` the source is done,
        raising the latest error if there was one.
        """
        if self._started:
            if self._max_reconnects is not None and (
                self._failures > self._max_reconnects
            ):
                self._done = True
                if self.last_error is not None:
                    raise self.last_error
                return False
            await trio.sleep(
                backoff_delay(self._retry, self._failures, self._max_retry, self._rng)
            )
            self.reconnects += 1
        self._started = True
        return True

    def _fail(self, error: E | None) -> None:
        """Note a dropped stream or a failed attempt; the next one backs off."""
        self._failures += 1
        self.last_error = error
        if error is not None:
            self._logger.info("%s; reconnecting", error)
