"""The per-process cap on open streams (``SseConfig.max_streams``).

:func:`~trio_sse.serve` puts one :class:`StreamCount` in every http and
websocket scope it serves (``scope["trio_sse.streams"]``), so the count
lives with the server, as the shutdown signal does: no global state. A
response over the cap refuses the request before its stream starts.
"""

from __future__ import annotations

import random

from ._config import SseConfig
from ._event import Event

__all__ = ["STREAMS_SCOPE_KEY", "StreamCount", "overload_retry_ms", "refusal"]

#: Where :func:`~trio_sse.serve` puts its :class:`StreamCount` in each scope.
STREAMS_SCOPE_KEY = "trio_sse.streams"


class StreamCount:
    """How many streams (SSE and WebSocket) one server has open."""

    __slots__ = ("open",)

    def __init__(self) -> None:
        #: Streams open now.
        self.open = 0

    def acquire(self, limit: int | None) -> bool:
        """Count one more stream, unless ``limit`` are open already."""
        if limit is not None and self.open >= limit:
            return False
        self.open += 1
        return True

    def release(self) -> None:
        """Count one stream fewer."""
        self.open -= 1


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
