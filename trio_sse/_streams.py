"""Views over any async iterable: :func:`replay`, :func:`chain`, :func:`cast_events`.

Each view is an async iterator and an async context manager whose
``aclose()`` closes what it reads. A view of a stream that knows the event
id of its last item (``last_id``, as a :class:`~trio_sse.BroadcastStream`
does) passes it on, so an event made from an item gets the item's id.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import trio

from ._errors import UnwritableItem
from ._event import Event

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["as_event", "cast", "chain", "mapped", "replay"]

T = TypeVar("T")


def cast(fn: Callable[[Any], Event], item: object, event_id: str | None) -> Event:
    """Map ``item`` with ``fn``; give the event ``event_id`` if it has no id.

    The one place where an event made from an item after publishing gets the
    item's id (an :class:`~trio_sse.Event` published as such was given its
    id by the backend).

    :raises UnwritableItem: when ``fn`` returns something else than an Event.
    """
    event = fn(item)
    if not isinstance(event, Event):
        raise UnwritableItem(
            f"cast_events() function must return an Event, got {type(event).__name__}"
        )
    if event.id is None and event_id is not None:
        return event.with_id(event_id)
    return event


def as_event(item: object) -> Event:
    """What ``Broadcaster.response()`` makes of an item: an Event, or ``str`` data.

    :raises UnwritableItem: for anything else.
    """
    if isinstance(item, Event):
        return item
    if isinstance(item, str):
        return Event(item)
    raise UnwritableItem(
        f"Broadcaster.response() streams Event or str items, got "
        f"{type(item).__name__}; map items with stream.cast_events(fn)"
    )


async def _aclose(obj: object) -> None:
    aclose = getattr(obj, "aclose", None)
    if aclose is not None:
        await aclose()


class _Closing(AsyncIterator[T]):
    """An async iterator that is also an async context manager."""

    __slots__ = ()

    def __aiter__(self) -> Self:
        return self

    async def aclose(self) -> None:
        """Close the underlying iterables."""
        await trio.lowlevel.checkpoint()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


class _Replay(_Closing[T]):
    __slots__ = ("_items",)

    def __init__(self, items: Iterable[T]) -> None:
        self._items = deque(items)

    async def __anext__(self) -> T:
        await trio.lowlevel.checkpoint()
        if not self._items:
            raise StopAsyncIteration
        return self._items.popleft()

    async def aclose(self) -> None:
        self._items.clear()
        await trio.lowlevel.checkpoint()


def replay(items: Iterable[T]) -> AsyncIterator[T]:
    """Return an async stream of ``items`` (copied at once), for example a snapshot.

    Chain it before a live stream: ``chain(replay(snapshot), stream)``.
    """
    return _Replay(items)


class _Mapped(_Closing[Event]):
    """Events made with ``fn`` from the items of ``source``."""

    __slots__ = ("_fn", "_iterator", "_source")

    def __init__(self, source: AsyncIterable[Any], fn: Callable[[Any], Event]):
        self._source = source
        self._iterator = aiter(source)
        self._fn = fn

    @property
    def last_id(self) -> str | None:
        """The event id of the source's last item, when the source knows it."""
        return getattr(self._source, "last_id", None)

    async def __anext__(self) -> Event:
        item = await self._iterator.__anext__()
        return cast(self._fn, item, self.last_id)

    async def aclose(self) -> None:
        await _aclose(self._source)


def mapped(aiterable: AsyncIterable[Any], fn: Callable[[Any], Event]) -> _Mapped:
    """Map the items of any async iterable to events with ``fn`` (see :func:`cast`)."""
    return _Mapped(aiterable, fn)


class _Chain(_Closing[Any]):
    __slots__ = ("_current", "_parts")

    def __init__(self, parts: tuple[AsyncIterable[Any], ...]) -> None:
        self._parts = deque(parts)
        self._current: AsyncIterator[Any] | None = None

    @property
    def last_id(self) -> str | None:
        """The event id of the current part's last item, when it knows it."""
        return getattr(self._current, "last_id", None)

    async def __anext__(self) -> Any:
        while True:
            if self._current is None:
                if not self._parts:
                    raise StopAsyncIteration
                self._current = aiter(self._parts.popleft())
            try:
                return await self._current.__anext__()
            except StopAsyncIteration:
                done, self._current = self._current, None
                await _aclose(done)

    async def aclose(self) -> None:
        parts: list[object] = [self._current, *self._parts]
        self._current = None
        self._parts.clear()
        for part in parts:
            if part is not None:
                await _aclose(part)


def chain(*aiterables: AsyncIterable[T]) -> AsyncIterator[T]:
    """Yield every item of each async iterable in turn.

    The result is also an async context manager; ``aclose()`` closes every
    part, consumed or not.
    """
    return _Chain(aiterables)
