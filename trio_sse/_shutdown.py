"""The signal a server gives its open streams when it begins to shut down."""

from __future__ import annotations

from collections.abc import Callable

import trio

__all__ = ["SHUTDOWN_SCOPE_KEY", "ShutdownSignal"]

#: Where :func:`~trio_sse.serve` puts its :class:`ShutdownSignal` in each scope.
SHUTDOWN_SCOPE_KEY = "trio_sse.shutdown"


class ShutdownSignal:
    """Set once, when graceful shutdown begins; streams then end cleanly.

    :func:`~trio_sse.serve` puts one in every http and websocket scope
    (``scope["trio_sse.shutdown"]``). It works like a :class:`trio.Event`
    (:meth:`set`, :meth:`is_set`, :meth:`wait`), and a response can also
    register a callback instead of parking a task on :meth:`wait`: with many
    idle streams open, that is one task (about 2 KiB) fewer per stream.
    """

    __slots__ = ("_callbacks", "_event")

    def __init__(self) -> None:
        self._event = trio.Event()
        self._callbacks: set[Callable[[], None]] = set()

    def is_set(self) -> bool:
        """Whether shutdown has begun."""
        return self._event.is_set()

    def set(self) -> None:
        """Begin shutdown: wake :meth:`wait` and run the callbacks, once."""
        if self._event.is_set():
            return
        self._event.set()
        callbacks, self._callbacks = self._callbacks, set()
        for callback in callbacks:
            callback()

    async def wait(self) -> None:
        """Wait until shutdown begins."""
        await self._event.wait()

    def add_callback(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback()`` when shutdown begins; return a function that cancels it.

        If shutdown has already begun, ``callback`` runs at once. Callbacks
        run synchronously inside :meth:`set` and must not raise.
        """
        if self._event.is_set():
            callback()
            return _nothing
        self._callbacks.add(callback)
        return lambda: self._callbacks.discard(callback)

    def remove_callback(self, callback: Callable[[], None]) -> None:
        """Forget ``callback`` (one equal to it) if it was added and has not run.

        What the function :meth:`add_callback` returns does, for a caller
        that would rather not keep that function (a bound method is equal
        to another of the same object and function).
        """
        self._callbacks.discard(callback)


def _nothing() -> None:
    pass
