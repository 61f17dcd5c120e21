"""Prometheus metrics of the streams a server runs (needs ``prometheus-client``).

A :class:`Metrics` object counts the SSE and WebSocket streams of the
scopes it is put in and the broadcasters it watches, and serves them in the
Prometheus text format from its own :class:`~prometheus_client.CollectorRegistry`
(never the process-wide default one)::

    metrics = Metrics()
    metrics.watch(broadcaster, "chat")
    app = router_with({"/metrics": metrics.app, ...})
    await trio_sse.serve(app, metrics=metrics)   # or app = metrics.middleware(app)

The streams add to plain integers as they go (an addition per write, no
lock); the metrics are computed from them, and from
:meth:`Broadcaster.stats() <trio_sse.Broadcaster.stats>`, when Prometheus
scrapes. Install with ``pip install trio-sse[metrics]``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from typing import Any, Final

from prometheus_client import CollectorRegistry, make_asgi_app
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
)

from ._broadcast import Broadcaster, BroadcastStatistics
from ._counters import StreamCounters
from ._driver import End, TransportCounters

__all__ = ["OTHER_KEYS", "Metrics"]

#: The ``key`` label of the subscribers of the keys outside the top ones.
OTHER_KEYS: Final = "__other__"

_Scope = MutableMapping[str, Any]
_Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
_Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
_App = Callable[[_Scope, _Receive, _Send], Awaitable[None]]

# The ``reason`` label of each End.
_REASONS: Final = {end: end.name.lower() for end in End}


class Metrics(StreamCounters):
    """Stream and broadcaster metrics, exposed to Prometheus.

    A :class:`~trio_sse.StreamCounters` (pass it as ``serve(app,
    metrics=m)`` or wrap an application with ``m.middleware(app)``) that
    also watches broadcasters (:meth:`watch`) and serves everything at
    :attr:`app`. The metrics, described in the Metrics page of the guide:

    - per transport (``sse``, ``websocket``): ``trio_sse_streams_open``,
      ``trio_sse_streams_opened_total``, ``trio_sse_streams_ended_total``
      (by ``reason``: ``ended``, ``lagged``, ``failed``, ``disconnected``,
      ``timed_out``, ``shutdown``, ``lifetime``),
      ``trio_sse_streams_refused_total`` (over ``SseConfig.max_streams``),
      ``trio_sse_events_written_total``, ``trio_sse_written_bytes_total``;
    - per watched broadcaster: ``trio_sse_broadcast_subscribers`` (by
      ``key``, the busiest ``top_keys`` keys and ``__other__``),
      ``trio_sse_broadcast_keys``, ``trio_sse_broadcast_published_total``,
      ``trio_sse_broadcast_sent_total``, ``trio_sse_broadcast_lags_total``
      (by ``outcome``: ``skipped``, ``ended``, ``raised``),
      ``trio_sse_broadcast_missed_total``.

    :param registry: the registry to add the metrics to; by default a new
        one of this object's own.
    :param top_keys: the default of :meth:`watch`'s ``top_keys``.
    :raises ValueError: for a negative ``top_keys``.
    """

    def __init__(
        self, *, registry: CollectorRegistry | None = None, top_keys: int = 10
    ) -> None:
        super().__init__()
        self._top_keys = _check_top_keys(top_keys)
        self._watched: dict[str, tuple[Broadcaster[Any, Any], int]] = {}
        #: The registry the metrics are in.
        self.registry = registry if registry is not None else CollectorRegistry()
        self.registry.register(_Collector(self))
        #: An ASGI application serving the registry in the Prometheus (or,
        #: when asked, OpenMetrics) text format: mount it at ``/metrics``.
        self.app: _App = _ExpositionApp(self.registry)

    def watch(
        self,
        broadcaster: Broadcaster[Any, Any],
        name: str,
        *,
        top_keys: int | None = None,
    ) -> None:
        """Expose ``broadcaster``'s subscribers and lag outcomes as ``name``.

        Keys become label values (``str(key)``) for the ``top_keys`` keys
        with the most subscribers only; the others are summed under
        ``key="__other__"``, so a broadcaster with a key per user adds at
        most ``top_keys + 1`` series. Keys may name users or tenants: keep
        ``top_keys=0`` if they should not reach the metrics. Read at scrape
        time, from the trio thread that runs the server.

        :raises TypeError: if ``broadcaster`` is not a
            :class:`~trio_sse.Broadcaster`.
        :raises ValueError: for an empty or already watched ``name``, or a
            negative ``top_keys``.
        """
        if not isinstance(broadcaster, Broadcaster):
            raise TypeError(f"watch() needs a Broadcaster, got {broadcaster!r}")
        if not isinstance(name, str) or not name:
            raise ValueError(f"name must be a non-empty str, got {name!r}")
        if name in self._watched:
            raise ValueError(f"a broadcaster is already watched as {name!r}")
        top = self._top_keys if top_keys is None else _check_top_keys(top_keys)
        self._watched[name] = (broadcaster, top)

    def unwatch(self, name: str) -> None:
        """Stop exposing the broadcaster watched as ``name``.

        :raises KeyError: if none is.
        """
        try:
            del self._watched[name]
        except KeyError:
            raise KeyError(f"no broadcaster is watched as {name!r}") from None

    def collect(self) -> list[Metric]:
        """The metrics now, as :mod:`prometheus_client` metric families."""
        return list(self._families(True))

    def _families(self, samples: bool) -> Iterator[Metric]:
        """Every metric family; with its samples when ``samples``."""
        transports: list[tuple[str, TransportCounters]] = (
            [("sse", self.sse), ("websocket", self.websocket)] if samples else []
        )
        family: Any
        family = GaugeMetricFamily(
            "trio_sse_streams_open", "Streams open now.", labels=["transport"]
        )
        for label, counters in transports:
            family.add_metric([label], counters.open)
        yield family
        for name, doc, attribute in (
            ("trio_sse_streams_opened", "Streams started.", "opened"),
            (
                "trio_sse_streams_refused",
                "Streams refused over SseConfig.max_streams.",
                "refused",
            ),
            (
                "trio_sse_events_written",
                "Stream items written (events, not keep-alives).",
                "events",
            ),
            (
                "trio_sse_written_bytes",
                "Bytes written to streams, keep-alives included.",
                "bytes",
            ),
        ):
            family = CounterMetricFamily(name, doc, labels=["transport"])
            for label, counters in transports:
                family.add_metric([label], getattr(counters, attribute))
            yield family
        family = CounterMetricFamily(
            "trio_sse_streams_ended",
            "Streams ended, by reason.",
            labels=["transport", "reason"],
        )
        for label, counters in transports:
            for end, count in counters.ends.items():
                family.add_metric([label, _REASONS[end]], count)
        yield family
        yield from self._broadcast_families(samples)

    def _broadcast_families(self, samples: bool) -> Iterator[Metric]:
        watched = self._watched.items() if samples else ()
        subscribers = GaugeMetricFamily(
            "trio_sse_broadcast_subscribers",
            f"Subscribers of the keys with the most; the others as {OTHER_KEYS}.",
            labels=["broadcaster", "key"],
        )
        keys = GaugeMetricFamily(
            "trio_sse_broadcast_keys",
            "Keys with subscribers.",
            labels=["broadcaster"],
        )
        published = CounterMetricFamily(
            "trio_sse_broadcast_published",
            "Items published.",
            labels=["broadcaster"],
        )
        sent = CounterMetricFamily(
            "trio_sse_broadcast_sent",
            "Items delivered to keys with subscribers.",
            labels=["broadcaster"],
        )
        lags = CounterMetricFamily(
            "trio_sse_broadcast_lags",
            "Lag outcomes: skipped (SKIP), ended (END), raised (Lagged).",
            labels=["broadcaster", "outcome"],
        )
        missed = CounterMetricFamily(
            "trio_sse_broadcast_missed",
            "Items subscribers did not receive because they lagged.",
            labels=["broadcaster"],
        )
        for name, (broadcaster, top) in watched:
            stats = broadcaster.stats(top=top)
            for label, count in _top_subscribers(stats):
                subscribers.add_metric([name, label], count)
            keys.add_metric([name], len(broadcaster.keys()))
            published.add_metric([name], stats.published)
            sent.add_metric([name], stats.sent)
            lags.add_metric([name, "skipped"], stats.lag_skipped)
            lags.add_metric([name, "ended"], stats.lag_ended)
            lags.add_metric([name, "raised"], stats.lag_raised)
            missed.add_metric([name], stats.missed)
        yield from (subscribers, keys, published, sent, lags, missed)

    def __repr__(self) -> str:
        return (
            f"<Metrics sse={self.sse!r} websocket={self.websocket!r}"
            f" watching={sorted(self._watched)!r}>"
        )


class _Collector:
    """The registry's view of a :class:`Metrics` (which it must not own)."""

    __slots__ = ("_metrics",)

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> list[Metric]:
        return self._metrics.collect()

    def describe(self) -> list[Metric]:
        # The names, without reading anything: the registry checks them for
        # clashes with its other collectors.
        return list(self._metrics._families(False))


def _check_top_keys(top_keys: int) -> int:
    if isinstance(top_keys, bool) or not isinstance(top_keys, int) or top_keys < 0:
        raise ValueError(f"top_keys must be an integer >= 0, got {top_keys!r}")
    return top_keys


def _top_subscribers(stats: BroadcastStatistics[Any]) -> list[tuple[str, int]]:
    """``(label, subscribers)`` of the keys in ``stats``, then of the others.

    Keys whose ``str()`` is the same share one label (their counts add up),
    so no series appears twice.
    """
    labels: dict[str, int] = {}
    for key, key_stats in stats.keys.items():
        label = str(key)
        labels[label] = labels.get(label, 0) + key_stats.subscribers
    rest = stats.subscribers - sum(s.subscribers for s in stats.keys.values())
    labels[OTHER_KEYS] = labels.get(OTHER_KEYS, 0) + rest
    return list(labels.items())


class _ExpositionApp:
    """prometheus_client's ASGI application, which also answers ``lifespan``
    (so it can be served alone) and refuses WebSocket connections.

    An object rather than a function, so that routers (Starlette's
    ``Route``) call it as an ASGI application, not as a request handler.
    """

    __slots__ = ("_exposition",)

    def __init__(self, registry: CollectorRegistry) -> None:
        self._exposition = make_asgi_app(registry)

    async def __call__(self, scope: _Scope, receive: _Receive, send: _Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._exposition(scope, receive, send)
        elif kind == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        elif kind == "websocket":
            await send({"type": "websocket.close", "code": 1003, "reason": ""})

    def __repr__(self) -> str:
        return "<trio_sse.metrics exposition app>"
