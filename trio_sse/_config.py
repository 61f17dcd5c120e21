"""Stream settings shared by every response of a broadcaster."""

from __future__ import annotations

import datetime
import math
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from ._errors import ConfigError

__all__ = ["SseConfig"]

_Check = Callable[[object, "attrs.Attribute[Any]", object], None]


def _seconds(*, allow_zero: bool) -> _Check:
    """Validate a duration in seconds: ``None`` (off) or a finite number."""
    least = ">= 0" if allow_zero else "> 0"

    def check(_inst: object, attr: attrs.Attribute[Any], value: object) -> None:
        if value is None:
            return
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(
                f"{attr.name} must be a number of seconds or None, got {value!r}",
                key=attr.name,
            )
        if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
            off = "" if allow_zero else " (None turns it off)"
            raise ConfigError(
                f"{attr.name} must be finite and {least}{off}, got {value!r}",
                key=attr.name,
            )

    return check


def _positive_int(_inst: object, attr: attrs.Attribute[Any], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(
            f"{attr.name} must be a positive integer, got {value!r}", key=attr.name
        )


def _to_seconds(value: object) -> object:
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    return value


def _duration(default: float | None, *, allow_zero: bool = True) -> Any:
    return attrs.field(
        default=default,
        converter=_to_seconds,
        validator=_seconds(allow_zero=allow_zero),
    )


@attrs.frozen(kw_only=True)
class SseConfig:
    """How every stream of a broadcaster (or one response) behaves.

    All durations are seconds (``float`` or :class:`datetime.timedelta`);
    ``None`` turns a feature off (``0`` does too for ``keep_alive``).
    """

    #: Send a comment line when no event went out for this long.
    keep_alive: float | None = _duration(15.0)
    #: Reconnection time sent as ``retry:`` at the start of each stream.
    retry: float | None = _duration(None)
    #: Cut off a client whose writes do not complete within this time
    #: (``None`` turns it off; ``0`` is rejected).
    write_timeout: float | None = _duration(30.0, allow_zero=False)
    #: Reconnection time sent as a final ``retry:`` when the server shuts down.
    shutdown_retry: float | None = _duration(None)
    #: Upper bound of one coalesced write, in bytes.
    coalesce_bytes: int = attrs.field(default=65_536, validator=_positive_int)
    #: A stream that is behind writes at most once per ``write_delay``, so
    #: that the events of that time go out in one write (each write costs
    #: the server far more than the bytes in it). A stream is behind once
    #: events were waiting after two writes in a row, until it has waited a
    #: whole ``write_delay`` for an event; one that keeps up never waits,
    #: and on an idle server every event is written at once. ``0``: never
    #: wait.
    write_delay: float = attrs.field(
        default=0.05, converter=_to_seconds, validator=_seconds(allow_zero=True)
    )

    #: Open streams (SSE and WebSocket) a server process serves at most;
    #: a request over the cap is refused before its stream starts. Counted
    #: by :func:`~trio_sse.serve`, per call. ``None``: no cap.
    max_streams: int | None = attrs.field(default=None)

    @max_streams.validator
    def _check_max_streams(self, attr: attrs.Attribute[Any], value: object) -> None:
        if value is not None:
            _positive_int(self, attr, value)

    #: The ``retry:`` (or ``Retry-After``) of a refused stream, in seconds,
    #: with up to ± 20 % jitter.
    overload_retry: float = _duration(5.0)
    #: How a stream over ``max_streams`` is refused: ``200`` with a
    #: ``retry:`` and an immediate end (a browser's EventSource gives up for
    #: good after any other status), or ``503`` with ``Retry-After``.
    overload_status: int = attrs.field(default=200)

    @overload_status.validator
    def _check_status(self, attr: attrs.Attribute[Any], value: object) -> None:
        if value not in (200, 503) or isinstance(value, bool):
            raise ConfigError(
                f"{attr.name} must be 200 or 503, got {value!r}", key=attr.name
            )

    #: End every stream after this long (less up to 10 % at random), with a
    #: final ``retry:``, so that clients reconnect (with ``Last-Event-ID``,
    #: missing nothing): to check a token again, or to rebalance a fleet
    #: after a deploy. ``None``: streams live as long as their clients.
    max_lifetime: float | None = _duration(None, allow_zero=False)
    #: The largest event a broadcaster publishes, in encoded bytes (the
    #: ``data:`` prefix of every line included): a larger one is refused at
    #: publish time with :class:`~trio_sse.InvalidEvent`, never written or
    #: kept in history. ``None``: no limit.
    max_event_bytes: int | None = attrs.field(default=1_048_576)

    @max_event_bytes.validator
    def _check_max_event(self, attr: attrs.Attribute[Any], value: object) -> None:
        if value is not None:
            _positive_int(self, attr, value)

    #: The name of an event sent (with empty data) before the live events
    #: when a reconnecting client's ``Last-Event-ID`` could not be replayed
    #: (trimmed from the history, or unknown), so that the page refetches its
    #: state; ``None`` (the default) sends nothing.
    replay_reset_event: str | None = attrs.field(default=None)

    @replay_reset_event.validator
    def _check_reset(self, attr: attrs.Attribute[Any], value: object) -> None:
        if value is None:
            return
        if not isinstance(value, str) or not value or any(c in value for c in "\r\n"):
            raise ConfigError(
                f"{attr.name} must be an event name (no CR or LF) or None,"
                f" got {value!r}",
                key=attr.name,
            )

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any]) -> SseConfig:
        """Build a config from the ``sse:`` section of an application config.

        Accepts the section itself or a mapping with an ``sse`` key. Keys are
        ``keep_alive_interval_secs``, ``retry_secs``, ``write_timeout_secs``,
        ``shutdown_retry_secs``, ``coalesce_max_bytes`` and
        ``write_delay_secs`` (or the field names). Unknown keys and bad
        values raise :class:`ConfigError` naming the key.
        """
        if not isinstance(mapping, Mapping):
            raise ConfigError(f"SSE config must be a mapping, got {mapping!r}")
        section = mapping.get("sse", mapping) if "sse" in mapping else mapping
        if not isinstance(section, Mapping):
            raise ConfigError(
                f"'sse' section must be a mapping, got {section!r}", key="sse"
            )
        fields: dict[str, Any] = {}
        keys: dict[str, str] = {}
        for key, value in section.items():
            field = _KEYS.get(key)
            if field is None:
                known = ", ".join(sorted(k for k in _KEYS if k not in _FIELDS))
                raise ConfigError(
                    f"unknown SSE config key {key!r} (known: {known})", key=key
                )
            if field in fields:
                raise ConfigError(f"SSE config key {key!r} given twice", key=key)
            fields[field] = value
            keys[field] = key
        try:
            return cls(**fields)
        except ConfigError as exc:
            key = keys.get(exc.key or "", exc.key or "")
            raise ConfigError(f"sse.{key}: {exc}", key=key) from None


_FIELDS = frozenset(field.name for field in attrs.fields(SseConfig))

# Keys of an application config's ``sse:`` section, and the fields they set:
# each field by its own name and by its documented config-file name.
_KEYS: Mapping[str, str] = {
    **{name: name for name in _FIELDS},
    "keep_alive_interval_secs": "keep_alive",
    "retry_secs": "retry",
    "write_timeout_secs": "write_timeout",
    "shutdown_retry_secs": "shutdown_retry",
    "coalesce_max_bytes": "coalesce_bytes",
    "write_delay_secs": "write_delay",
    "max_event_size_bytes": "max_event_bytes",
    "max_lifetime_secs": "max_lifetime",
    "overload_retry_secs": "overload_retry",
}
