"""Quart-trio: a ``quart.Response`` that streams with :class:`~trio_sse.SseResponse`.

Quart does not serve raw ASGI applications from a route, and its own
streaming (an async generator as the body) has no keep-alive, no write
timeout and no server-shutdown signal. :class:`EventSourceResponse` is a
``quart.Response`` whose body runs an :class:`~trio_sse.SseResponse` in a
nursery that Quart's own ``async with response.response`` block owns, so
the stream keeps every guarantee of the core::

    from quart_trio import QuartTrio
    from trio_sse import Broadcaster
    from trio_sse.quart import EventSourceResponse, last_event_id

    app = QuartTrio(__name__)
    bc: Broadcaster[str, str] = Broadcaster(history=100)

    @app.get("/rooms/<room>/events")
    async def events(room: str) -> EventSourceResponse:
        stream = bc.subscribe(room, last_event_id=last_event_id())
        return EventSourceResponse(bc.response(stream))

A client disconnect reaches the stream as the cancellation Quart-trio
applies when ``http.disconnect`` arrives; the server's shutdown signal (from
:func:`trio_sse.serve`) reaches it through the request's ASGI scope. Quart's
``RESPONSE_TIMEOUT`` does not apply to these responses.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Any

import quart
import trio
from quart.wrappers.response import ResponseBody
from werkzeug.datastructures import Headers

from . import SseConfig, SseResponse
from . import last_event_id as _scope_last_event_id

__all__ = ["EventSourceResponse", "last_event_id"]

logger = logging.getLogger("trio_sse")

_Message = dict[str, Any]
# The core's ASGI types are more precise than what this module passes.
_AsgiApp = Callable[[Any, Any, Any], Awaitable[None]]

# The response headers of an SseResponse (the status line is sent by Quart
# before the body starts, from the quart.Response).
_SSE_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}
_CONTENT_TYPE = "text/event-stream; charset=utf-8"


def last_event_id(request: quart.Request | None = None) -> str | None:
    """The client's last event id, or ``None``.

    Reads *request*, by default Quart's current ``request``: the
    ``Last-Event-ID`` header, else a ``lastEventId`` query parameter;
    malformed values are ignored (see :func:`trio_sse.last_event_id`).
    """
    if request is None:
        request = quart.request
    return _scope_last_event_id(request.scope)


async def _never() -> _Message:
    """The ``receive`` of a stream under Quart: Quart itself reads the
    connection and cancels the response on ``http.disconnect``."""
    await trio.sleep_forever()


class _SseBody(ResponseBody):
    """A Quart response body that runs an ASGI response in its own nursery.

    Quart enters the body with ``async with``, iterates it and sends each
    chunk; the nursery lives exactly as long as that block.
    """

    def __init__(self, app: _AsgiApp, scope: Mapping[str, Any], status: int):
        self.app = app
        self.scope = scope
        self.status = status
        self._manager: AbstractAsyncContextManager[trio.Nursery] | None = None
        self._nursery: trio.Nursery | None = None
        self._chunks: trio.MemoryReceiveChannel[bytes] | None = None

    async def __aenter__(self) -> _SseBody:
        if self._manager is not None:
            raise RuntimeError("an EventSourceResponse serves one request only")
        tx, self._chunks = trio.open_memory_channel[bytes](0)
        self._manager = trio.open_nursery()
        self._nursery = await self._manager.__aenter__()
        self._nursery.start_soon(self._serve, tx)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._manager is not None and self._nursery is not None
        assert self._chunks is not None
        self._chunks.close()
        if exc_type is not None:
            # Quart stopped sending (cancelled on disconnect, or failed).
            self._nursery.cancel_scope.cancel()
        await self._manager.__aexit__(exc_type, exc_value, tb)

    def __aiter__(self) -> AsyncIterator[bytes]:
        assert self._chunks is not None
        return self._chunks.__aiter__()

    async def _serve(self, tx: trio.MemorySendChannel[bytes]) -> None:
        async def send(message: _Message) -> None:
            kind = message["type"]
            if kind == "http.response.start":
                if message["status"] != self.status:
                    logger.warning(
                        "SSE response status %s replaced by %s: Quart has sent"
                        " the status line already",
                        message["status"],
                        self.status,
                    )
            elif kind == "http.response.body":
                body = message.get("body", b"")
                if body:
                    await tx.send(body)
                if not message.get("more_body", False):
                    tx.close()

        with tx:
            await self.app(dict(self.scope), _never, send)


class EventSourceResponse(quart.Response):
    """A ``quart.Response`` streaming *stream* as ``text/event-stream``.

    *stream* is anything :class:`~trio_sse.SseResponse` takes, or an
    :class:`~trio_sse.SseResponse` already made (``bc.response(...)``,
    ``bc.channel(fn)``, :func:`~trio_sse.sse_channel`); then *config*,
    *status* and *headers* belong to that response and may not be given
    here. Create it inside a request (a route or a hook): it serves that
    request.
    """

    def __init__(
        self,
        stream: AsyncIterable[Any] | SseResponse,
        *,
        config: SseConfig | None = None,
        status: int = 200,
        headers: Mapping[str, str] | None = None,
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
            app = SseResponse(stream, config=config, status=status, headers=headers)
        if not quart.has_request_context():
            raise RuntimeError(
                "create trio_sse.quart.EventSourceResponse inside a Quart request"
            )
        all_headers = Headers(_SSE_HEADERS)
        for name, value in (headers or {}).items():
            all_headers[name] = value
        super().__init__(
            _SseBody(app, quart.request.scope, status),
            status=status,
            headers=all_headers,
            content_type=None if "content-type" in all_headers else _CONTENT_TYPE,
        )
        #: The ASGI application that serves the stream.
        self.app: _AsgiApp = app
        # A stream is meant to outlive Quart's RESPONSE_TIMEOUT.
        self.timeout = None
