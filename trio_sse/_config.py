"""Stream settings shared by every response of a broadcaster."""

from __future__ import annotations

import datetime
import math
from collections.abc import Mapping
from typing import Any

import attrs

from ._errors import ConfigError

__all__ = ["SseConfig"]


def _seconds_or_none(name: str) -> Any:
    def check(_inst: object, _attr: attrs.Attribute[Any], value: object) -> None:
        if value is None:
            return
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(
                f"{name} must be a number of seconds or None, got {value!r}"
            )
        if not math.isfinite(value) or value < 0:
            raise ConfigError(f"{name} must be finite and >= 0, got {value!r}")

    return check


def _to_seconds(value: object) -> object:
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    return value


# Keys of an application config's ``sse:`` section, and the fields they set.
_KEYS: Mapping[str, str] = {
    "keep_alive_interval_secs": "keep_alive",
    "keep_alive": "keep_alive",
    "retry_secs": "retry",
    "retry": "retry",
    "write_timeout_secs": "write_timeout",
    "write_timeout": "write_timeout",
    "shutdown_retry_secs": "shutdown_retry",
    "shutdown_retry": "shutdown_retry",
    "coalesce_max_bytes": "coalesce_bytes",
    "coalesce_bytes": "coalesce_bytes",
}


@attrs.frozen(kw_only=True)
class SseConfig:
    """How every stream of a broadcaster (or one response) behaves.

    All durations are seconds (``float`` or :class:`datetime.timedelta`);
    ``None`` (or ``0`` for ``keep_alive``) turns a feature off.
    """

    #: Send a comment line when no event went out for this long.
    keep_alive: float | None = attrs.field(
        default=15.0, converter=_to_seconds, validator=_seconds_or_none("keep_alive")
    )
    #: Reconnection time sent as ``retry:`` at the start of each stream.
    retry: float | None = attrs.field(
        default=None, converter=_to_seconds, validator=_seconds_or_none("retry")
    )
    #: Cut off a client whose writes do not complete within this time.
    write_timeout: float | None = attrs.field(
        default=30.0,
        converter=_to_seconds,
        validator=_seconds_or_none("write_timeout"),
    )
    #: Reconnection time sent as a final ``retry:`` when the server shuts down.
    shutdown_retry: float | None = attrs.field(
        default=None,
        converter=_to_seconds,
        validator=_seconds_or_none("shutdown_retry"),
    )
    #: Upper bound of one coalesced body chunk, in bytes.
    coalesce_bytes: int = attrs.field(default=65_536)

    @coalesce_bytes.validator
    def _check_coalesce(self, _attr: attrs.Attribute[int], value: object) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(
                f"coalesce_bytes must be a positive integer, got {value!r}"
            )

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any]) -> SseConfig:
        """Build a config from the ``sse:`` section of an application config.

        Accepts the section itself or a mapping with an ``sse`` key. Keys are
        ``keep_alive_interval_secs``, ``retry_secs``, ``write_timeout_secs``,
        ``shutdown_retry_secs`` and ``coalesce_max_bytes`` (or the field
        names). Unknown keys and bad values raise :class:`ConfigError` naming
        the key.
        """
        if not isinstance(mapping, Mapping):
            raise ConfigError(f"SSE config must be a mapping, got {mapping!r}")
        section = mapping.get("sse", mapping) if "sse" in mapping else mapping
        if not isinstance(section, Mapping):
            raise ConfigError(f"'sse' section must be a mapping, got {section!r}")
        fields: dict[str, Any] = {}
        for key, value in section.items():
            field = _KEYS.get(key)
            if field is None:
                known = ", ".join(
                    sorted(k for k in _KEYS if k.endswith(("secs", "bytes")))
                )
                raise ConfigError(f"unknown SSE config key {key!r} (known: {known})")
            if field in fields:
                raise ConfigError(f"SSE config key {key!r} given twice")
            fields[field] = value
        try:
            return cls(**fields)
        except ConfigError as exc:
            bad = str(exc).split()[0]
            key = next((k for k in section if _KEYS[k] == bad), bad)
            raise ConfigError(f"sse.{key}: {exc}") from None
