"""Running totals of the streams an application serves, for metrics.

A :class:`StreamCounters` reaches the responses through the ASGI scope
(``scope["trio_sse.counters"]``), as the shutdown signal and the stream count
do: :func:`~trio_sse.serve` puts it there (``serve(app, metrics=...)``), or
:meth:`StreamCounters.middleware` does for any other server. There is no
global state: each object counts the streams of the scopes it was put in.
:class:`trio_sse.metrics.Metrics` is one, exposed to Prometheus.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from ._asgi import Scope
from ._driver import TransportCounters

__all__ = ["COUNTERS_SCOPE_KEY", "StreamCounters", "counters_of"]

#: Where the counters go in each ``http`` and ``websocket`` scope.
COUNTERS_SCOPE_KEY = "trio_sse.counters"

_Scope = MutableMapping[str, Any]
_App = Callable[
    [
        _Scope,
        Callable[[], Awaitable[MutableMapping[str, Any]]],
        Callable[[MutableMapping[str, Any]], Awaitable[None]],
    ],
    Awaitable[None],
]


class StreamCounters:
    """Running totals of the SSE and WebSocket streams of the scopes it is in.

    :class:`~trio_sse.SseResponse` and :class:`~trio_sse.WebSocketResponse`
    add to it when they find it in their scope: streams opened and ended
    (by :class:`~trio_sse._driver.End` reason), items and bytes written,
    overload refusals. Pass it as ``serve(app, metrics=counters)``, or wrap
    an application with :meth:`middleware`. The totals are plain integers,
    read at any time (for example by a ``/status`` route);
    :class:`trio_sse.metrics.Metrics` exposes them to Prometheus.
    """

    __slots__ = ("sse", "websocket")

    def __init__(self) -> None:
        #: The streams of :class:`~trio_sse.SseResponse`.
        self.sse = TransportCounters()
        #: The streams of :class:`~trio_sse.WebSocketResponse`.
        self.websocket = TransportCounters()

    def middleware(self, app: Any) -> _App:
        """Return an ASGI application that runs ``app`` with these counters
        in every ``http`` and ``websocket`` scope.

        For servers other than :func:`~trio_sse.serve` (``hypercorn
        module:app``, a Starlette or Quart application's middleware).
        """
        if not callable(app):
            raise TypeError(f"middleware() needs an ASGI application, got {app!r}")

        async def with_counters(scope: _Scope, receive: Any, send: Any) -> None:
            if scope["type"] in ("http", "websocket"):
                scope = dict(scope)
                scope[COUNTERS_SCOPE_KEY] = self
            await app(scope, receive, send)

        return with_counters

    def __repr__(self) -> str:
        return f"<{type(self).__name__} sse={self.sse!r} websocket={self.websocket!r}>"


def counters_of(scope: Scope) -> StreamCounters | None:
    """The counters in ``scope``, if something put them there."""
    counters = scope.get(COUNTERS_SCOPE_KEY)
    return counters if isinstance(counters, StreamCounters) else None
