"""The per-process cap on open streams (``SseConfig.max_streams``).

:func:`~trio_sse.serve` puts one :class:`StreamCount` in every http and
websocket scope it serves (``scope["trio_sse.streams"]``), so the count
lives with the server, as the shutdown signal does: no global state. A
response over the cap refuses the request before its stream starts.
"""

from __future__ import annotations

import logging
import math
import random

import trio

from ._config import SseConfig
from ._event import Event

__all__ = ["STREAMS_SCOPE_KEY", "StreamCount", "overload_retry_ms", "refusal"]

logger = logging.getLogger("trio_sse")

#: Where :func:`~trio_sse.serve` puts its :class:`StreamCount` in each scope.
STREAMS_SCOPE_KEY = "trio_sse.streams"
#: Seconds between two log lines about refused streams, at least.
REFUSAL_LOG_INTERVAL = 10.0


class StreamCount:
    """How many streams (SSE and WebSocket) one server has open.

    It also counts and logs the streams refused over the cap: the first
    refusal at once, then at most one line every
    :data:`REFUSAL_LOG_INTERVAL` seconds with the number of refusals since
    the previous line (a flood costs a few lines, not one per request).
    Refusals still unlogged are logged by the next stream that opens or
    closes once the interval is over, or by :meth:`log_refusals`.
    """

    __slots__ = ("_next_log", "_unlogged", "open", "refused")

    def __init__(self) -> None:
        #: Streams open now.
        self.open = 0
        #: Streams refused over the cap, since the server started.
        self.refused = 0
        self._unlogged = 0
        self._next_log = -math.inf

    def acquire(self, limit: int | None) -> bool:
        """Count one more stream, unless ``limit`` are open already."""
        if limit is not None and self.open >= limit:
            return False
        self.open += 1
        if self._unlogged:
            self._log_if_due()
        return True

    def release(self) -> None:
        """Count one stream fewer."""
        self.open -= 1
        if self._unlogged:
            self._log_if_due()

    def refuse(self) -> None:
        """Count one stream refused over the cap (and log it, see above)."""
        self.refused += 1
        self._unlogged += 1
        self._log_if_due()

    def _log_if_due(self) -> None:
        now = trio.current_time()
        if now >= self._next_log:
            self._next_log = now + REFUSAL_LOG_INTERVAL
            self.log_refusals()

    def log_refusals(self) -> None:
        """Log the refusals not logged yet, if any."""
        if self._unlogged:
            logger.warning(
                "%d stream%s refused: %d streams open (max_streams)",
                self._unlogged,
                "" if self._unlogged == 1 else "s",
                self.open,
            )
            self._unlogged = 0


def overload_retry_ms(config: SseConfig) -> int:
    """``config.overload_retry`` in milliseconds, with up to ± 20 % jitter."""
    return round(config.overload_retry * 1000 * random.uniform(0.8, 1.2))


def refusal(config: SseConfig) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """The status, extra headers and body that refuse a stream over the cap.

    ``200`` with a ``retry:`` and an immediate end by default, because a
    browser's EventSource never reconnects after any other status; ``503``
    with ``Retry-After`` when ``config.overload_status`` asks for it (API
    clients).
    """
    retry_ms = overload_retry_ms(config)
    if config.overload_status == 503:
        seconds = str(max(1, round(retry_ms / 1000))).encode()
        return 503, [(b"retry-after", seconds)], b""
    return 200, [], Event(retry=retry_ms / 1000).encode()
