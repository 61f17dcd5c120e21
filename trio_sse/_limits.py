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
    """How many streams (SSE and WebSocket) one server has open."""

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
        return True

    def release(self) -> None:
        """Count one stream fewer."""
        self.open -= 1

    def refuse(self, limit: int | None, answer: str) -> None:
        """Count one refused stream, and log it: the first refusal at once,
        then at most one line every :data:`REFUSAL_LOG_INTERVAL` seconds
        with the number it stands for (a flood costs a few lines, not one
        per request)."""
        self.refused += 1
        self._unlogged += 1
        now = trio.current_time()
        if now < self._next_log:
            return
        self._next_log = now + REFUSAL_LOG_INTERVAL
        logger.warning(
            "%d stream%s refused: %s streams open (max_streams); answered %s",
            self._unlogged,
            "" if self._unlogged == 1 else "s",
            limit,
            answer,
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
