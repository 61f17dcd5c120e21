"""The trio_sse error family."""

from __future__ import annotations

__all__ = ["ConfigError", "InvalidEvent", "Lagged", "SseError", "UnwritableItem"]


class SseError(Exception):
    """Base class of every error trio_sse raises on purpose."""


class InvalidEvent(SseError, ValueError):
    """An :class:`~trio_sse.Event` field cannot be written to the wire.

    Raised at construction, never at write time, with a message naming the
    field and the offending character.
    """


class ConfigError(SseError, ValueError):
    """A configuration value has the wrong type or range; the message names the key.

    :attr:`key` holds the offending setting's name (``None`` when the error
    is about the configuration as a whole).
    """

    def __init__(self, message: str, *, key: str | None = None) -> None:
        super().__init__(message)
        #: The name of the offending setting, or ``None``.
        self.key = key


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


class UnwritableItem(SseError, TypeError):
    """A stream item cannot be made an event.

    Raised by a stream view that maps items to events (``cast_events``,
    ``Broadcaster.response()``) for an item it cannot map; the item is
    consumed. A response logs it once and skips the item: the stream goes
    on, and a replay skips it the same way.
    """
