"""The trio_sse error family."""

from __future__ import annotations

__all__ = ["ConfigError", "InvalidEvent", "Lagged", "SseError"]


class SseError(Exception):
    """Base class of every error trio_sse raises on purpose."""


class InvalidEvent(SseError, ValueError):
    """An :class:`~trio_sse.Event` field cannot be written to the wire.

    Raised at construction, never at write time, with a message naming the
    field and the offending character.
    """


class ConfigError(SseError, ValueError):
    """A configuration value has the wrong type or range; the message names the key."""


class Lagged(SseError):
    """A subscriber fell more than ``buffer`` items behind its publisher.

    Raised once from the next ``__anext__`` of a
    :class:`~trio_sse.BroadcastStream` without a lag policy; iterating again
    continues with the items still held.
    """

    def __init__(self, missed: int) -> None:
        super().__init__(f"subscriber lagged behind and missed {missed} item(s)")
        #: How many items this subscriber did not receive.
        self.missed = missed
