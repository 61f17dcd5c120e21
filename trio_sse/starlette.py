"""Starlette and FastAPI: a ``Response`` streaming with :class:`~trio_sse.SseResponse`.

:class:`EventSourceResponse` is a real :class:`starlette.responses.Response`,
so Starlette endpoints and FastAPI path operations can return it; when it is
called it hands the request to an :class:`~trio_sse.SseResponse`, so every
guarantee of the core (keep-alive, disconnect, write timeout, shutdown,
coalescing, lag) comes from the one implementation::

    from fastapi import FastAPI
    from trio_sse import Broadcaster
    from trio_sse.starlette import EventSourceResponse, LastEventId

    app = FastAPI()
    bc: Broadcaster[str, str] = Broadcaster(history=100)

    @app.get("/rooms/{room}/events")
    async def events(room: str, last_id: LastEventId) -> EventSourceResponse:
        stream = bc.subscribe(room, last_event_id=last_id)
        return EventSourceResponse(bc.response(stream))

Starlette apps run on trio through anyio (Hypercorn's trio worker, or
:func:`trio_sse.serve`). Starlette is imported here only; FastAPI only if it
is installed (for :data:`LastEventId` and ``ServerSentEvent`` items).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Mapping
from datetime import timedelta
from typing import Annotated, Any

import trio
from starlette.background import BackgroundTask
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from . import Event, SseConfig, SseResponse
from . import last_event_id as _scope_last_event_id

__all__ = [
    "EventSourceResponse",
    "LastEventId",
    "last_event_id",
    "last_event_id_dependency",
]

# The framework's ASGI types and the core's differ in precision only.
_AsgiApp = Callable[[Any, Any, Any], Awaitable[None]]

_Depends: Any
_ServerSentEvent: Any
try:  # FastAPI is optional: its dependency marker and ServerSentEvent items.
    from fastapi import Depends as _Depends
except ImportError:  # pragma: no cover - Starlette without FastAPI
    _Depends = None
try:
    from fastapi.sse import ServerSentEvent as _ServerSentEvent
except ImportError:  # pragma: no cover - FastAPI before 0.135, or no FastAPI
    _ServerSentEvent = None


def last_event_id(request: HTTPConnection) -> str | None:
    """The client's last event id of a Starlette request, or ``None``.

    The ``Last-Event-ID`` header, else a ``lastEventId`` query parameter;
    malformed values are ignored (see :func:`trio_sse.last_event_id`).
    """
    return _scope_last_event_id(request.scope)


def last_event_id_dependency(request: Request) -> str | None:
    """FastAPI dependency: the client's last event id (see :data:`LastEventId`)."""
    return _scope_last_event_id(request.scope)


def _depends(fn: Any) -> object:
    # Without FastAPI the annotation is plain metadata, harmless to Starlette.
    return fn if _Depends is None else _Depends(fn)


#: For FastAPI parameters, as in ``async def route(last_id: LastEventId)``,
#: which receives the ``Last-Event-ID`` header (or ``lastEventId`` query
#: parameter), or ``None``.
LastEventId = Annotated[str | None, _depends(last_event_id_dependency)]


def _from_server_sent_event(item: Any) -> Event:
    """Convert a FastAPI ``ServerSentEvent`` as FastAPI itself encodes it."""
    data: str | None
    if item.raw_data is not None:
        data = item.raw_data
    elif item.data is not None:
        if hasattr(item.data, "model_dump_json"):
            data = item.data.model_dump_json()
        else:
            from fastapi.encoders import jsonable_encoder

            data = json.dumps(jsonable_encoder(item.data))
    else:
        data = None
    retry = None if item.retry is None else timedelta(milliseconds=item.retry)
    return Event(data, id=item.id, event=item.event, retry=retry, comment=item.comment)


def _reads_directly(stream: object) -> bool:
    """Whether SseResponse reads *stream* as a channel (no item conversion)."""
    return isinstance(stream, trio.abc.ReceiveChannel) or type(
        stream
    ).__module__.startswith("trio_sse.")


async def _convert_items(stream: AsyncIterable[Any]) -> AsyncIterator[Any]:
    """Yield *stream*'s items, FastAPI ``ServerSentEvent`` ones as Events."""
    server_sent_event = _ServerSentEvent
    iterator = aiter(stream)
    try:
        async for item in iterator:
            if server_sent_event is not None and isinstance(item, server_sent_event):
                yield _from_server_sent_event(item)
            else:
                yield item
    finally:
        await _aclose(iterator, stream)


async def _aclose(*targets: object) -> None:
    """``aclose()`` each distinct target that has it, whatever happens."""
    if not targets:
        return
    target, rest = targets[0], [t for t in targets[1:] if t is not targets[0]]
    try:
        aclose = getattr(target, "aclose", None)
        if aclose is not None:
            await aclose()
    finally:
        await _aclose(*rest)


class EventSourceResponse(Response):
    """A Starlette ``Response`` streaming *stream* as ``text/event-stream``.

    *stream* is anything :class:`~trio_sse.SseResponse` takes (a
    :class:`~trio_sse.BroadcastStream` or a view of one, a trio receive
    channel, an async generator of :class:`~trio_sse.Event`, ``str`` or
    ``bytes``; with FastAPI installed, an async iterable may also yield
    ``fastapi.sse.ServerSentEvent`` items), or an :class:`~trio_sse.SseResponse`
    already made, such as the result of ``bc.response(...)``,
    ``bc.channel(fn)`` or :func:`~trio_sse.sse_channel`; then *config*,
    *status* and *headers* belong to that response and may not be given
    here.

    Headers and status set on this object after construction (for example
    with ``set_cookie()``) are applied to the response when it starts.
    *background* runs after the stream ends, as for any Starlette response.
    """

    media_type = "text/event-stream"

    def __init__(
        self,
        stream: AsyncIterable[Any] | SseResponse,
        *,
        config: SseConfig | None = None,
        status: int = 200,
        headers: Mapping[str, str] | None = None,
        background: BackgroundTask | None = None,
    ) -> None:
        if isinstance(stream, SseResponse):
            if config is not None or status != 200 or headers is not None:
                raise TypeError(
                    "EventSourceResponse(SseResponse): set config, status and"
                    " headers on the SseResponse itself"
                )
            app = stream
            status = getattr(stream, "status", 200)
        else:
            if _ServerSentEvent is not None and not _reads_directly(stream):
                if not hasattr(stream, "__aiter__"):
                    raise TypeError(
                        "EventSourceResponse needs an async iterable of events,"
                        f" got {type(stream).__name__}"
                    )
                stream = _convert_items(stream)
            app = SseResponse(stream, config=config, status=status, headers=headers)
        #: The ASGI application that serves the stream.
        self.app: _AsgiApp = app
        self.status_code = status
        self.background = background
        self.body = b""
        self.init_headers(None if headers is None else dict(headers))
        # Drop the content-length Starlette adds for its (empty) body.
        self.raw_headers = [
            pair for pair in self.raw_headers if pair[0] != b"content-length"
        ]
        self._initial_status = status
        self._initial_headers = list(self.raw_headers)

    def _adjust_start(self, message: Message) -> Message:
        """Apply the status and headers changed on this object since __init__."""
        message = dict(message)
        if self.status_code != self._initial_status:
            message["status"] = self.status_code
        raw, initial = self.raw_headers, self._initial_headers
        # Every header of a name that changed comes from this object.
        names = {n for n, v in raw if (n, v) not in initial}
        names.update(n for n, v in initial if (n, v) not in raw)
        if names:
            kept = [(n, v) for n, v in message.get("headers", ()) if n not in names]
            message["headers"] = kept + [(n, v) for n, v in raw if n in names]
        return message

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve the stream; run the background task when it ends."""

        if (
            self.status_code == self._initial_status
            and self.raw_headers == self._initial_headers
        ):
            await self.app(scope, receive, send)
        else:

            async def adjusted_send(message: Message) -> None:
                if message["type"] == "http.response.start":
                    message = self._adjust_start(message)
                await send(message)

            await self.app(scope, receive, adjusted_send)
        if self.background is not None:
            await self.background()
