"""Streaming responses: the one module that speaks ASGI.

An :class:`~trio_sse.SseResponse` is a plain ASGI application. Each call
opens one nursery that owns everything the stream needs: the task reading
the user's stream (or running a :func:`~trio_sse.sse_channel` function), a
task watching ``receive()`` for ``http.disconnect``, an optional task
watching for server shutdown, and the writer loop (the nursery's own body).
Keep-alive comments, the write timeout and the coalescing of ready events
live in the writer.
"""

from __future__ import annotations

import logging
import math
import sys
import urllib.parse
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Mapping,
    MutableMapping,
)
from typing import Any, Protocol, final

import trio

from ._config import SseConfig
from ._errors import Lagged
from ._event import Event, comment
from ._shutdown import ShutdownSignal

__all__ = ["Sender", "SseResponse", "last_event_id", "sse_channel"]

logger = logging.getLogger("trio_sse")

#: What a stream may yield and :meth:`Sender.send` accepts.
EventLike = Event | str | bytes

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

# Size of the memory channel between a pump task and the writer: small, so a
# fast producer feels backpressure soon, large enough for coalescing to help.
_PUMP_BUFFER = 16
# The final (empty) body message gets at most this long, shielded.
_FINAL_SEND_TIMEOUT = 1.0
# Longest Last-Event-ID value accepted, in UTF-8 bytes.
_MAX_ID_BYTES = 256


_DEFAULT_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
)


class _Source(Protocol):
    """What the writer reads: a trio ``ReceiveChannel``-like object."""

    async def receive(self) -> Any: ...

    def receive_nowait(self) -> Any: ...


def _is_channel(stream: object) -> bool:
    """Whether the writer may read ``stream`` like a trio channel.

    True for trio receive channels and for trio_sse's own streams
    (:class:`~trio_sse.BroadcastStream` and its views), whose ``receive()``
    loses nothing when cancelled and whose ``receive_nowait()`` raises
    :exc:`trio.WouldBlock`. Other objects with methods of those names (an
    anyio stream raises its own ``WouldBlock``) go through the pump.
    """
    if isinstance(stream, trio.abc.ReceiveChannel):
        return True
    return (
        type(stream).__module__.startswith("trio_sse.")
        and callable(getattr(stream, "receive_nowait", None))
        and callable(getattr(stream, "receive", None))
    )


def _log_stream_error(what: object) -> None:
    """Log the exception being handled, which ends one response."""
    exc = sys.exc_info()[1]
    if isinstance(exc, Lagged):
        logger.info("SSE stream %r lagged (%s); ending the response", what, exc)
    else:
        logger.exception("SSE stream %r failed; ending the response", what)


def _encode(item: object) -> bytes:
    """Return the wire bytes of one stream item (an Event, str or bytes)."""
    if isinstance(item, Event):
        return item.encode()
    if isinstance(item, bytes):
        return item
    if isinstance(item, str):
        return Event(item).encode()
    if isinstance(item, (bytearray, memoryview)):
        return bytes(item)
    raise TypeError(
        "an SSE stream must yield Event, str or bytes objects,"
        f" not {type(item).__name__} ({item!r:.60})"
    )


def _header_bytes(value: str | bytes, what: str) -> bytes:
    raw = value.encode("latin-1") if isinstance(value, str) else bytes(value)
    if b"\r" in raw or b"\n" in raw or b"\0" in raw:
        raise ValueError(f"response header {what} may not contain CR, LF or NUL")
    return raw


def _build_headers(
    headers: Mapping[str, str] | Iterable[tuple[str | bytes, str | bytes]] | None,
) -> list[tuple[bytes, bytes]]:
    extra: list[tuple[bytes, bytes]] = []
    if headers is not None:
        pairs = headers.items() if isinstance(headers, Mapping) else headers
        for name, value in pairs:
            raw_name = _header_bytes(name, "name").lower()
            extra.append((raw_name, _header_bytes(value, f"{raw_name!r}")))
    overridden = {name for name, _ in extra}
    merged = [pair for pair in _DEFAULT_HEADERS if pair[0] not in overridden]
    merged.extend(extra)
    return merged


@final
class Sender:
    """The sending end handed to an :func:`~trio_sse.sse_channel` function.

    ``await tx.send(event)`` queues one event for the client; it waits while
    the response's small buffer is full, so a function that produces faster
    than the client reads is slowed down to the client's pace.
    """

    __slots__ = ("_tx",)

    def __init__(self, tx: trio.MemorySendChannel[bytes]) -> None:
        self._tx = tx

    async def send(self, event: Event | str | bytes) -> None:
        """Send an :class:`~trio_sse.Event`, a ``str`` (sent as
        ``Event(data=s)``) or bytes already encoded as event-stream blocks.

        :raises TypeError: for any other object.
        :raises trio.BrokenResourceError: if the response has ended.
        """
        try:
            await self._tx.send(_encode(event))
        except trio.ClosedResourceError:
            raise trio.BrokenResourceError("the SSE response has ended") from None


class SseResponse:
    """An ASGI application streaming ``stream`` as ``text/event-stream``.

    ``stream`` is an async iterable of :class:`~trio_sse.Event` (or ``str``,
    sent as ``Event(data=s)``, or ``bytes`` already encoded). Return it from
    a Starlette endpoint, or call it as
    ``await response(scope, receive, send)``.
    Each response serves one request; the stream is closed (``aclose()``)
    when the response ends, whatever the reason.

    A :class:`~trio_sse.BroadcastStream` (and what ``bc.response()`` makes
    of it) or a trio receive channel is read by the writer itself, which
    takes every ready event without a task switch. Any other
    async iterable is read by a task of its own, so keep-alives never cancel
    an async generator.

    :param config: keep-alive, write timeout, ``retry`` and coalescing
        settings (default :class:`~trio_sse.SseConfig`).
    :param status: the HTTP status.
    :param headers: extra response headers (a mapping or ``(name, value)``
        pairs); a name also set by default replaces the default.
    """

    def __init__(
        self,
        stream: AsyncIterable[EventLike],
        *,
        config: SseConfig | None = None,
        status: int = 200,
        headers: Mapping[str, str]
        | Iterable[tuple[str | bytes, str | bytes]]
        | None = None,
    ) -> None:
        if isinstance(status, bool) or not isinstance(status, int):
            raise TypeError(f"status must be an int, got {status!r}")
        if not hasattr(stream, "__aiter__") and not _is_channel(stream):
            hint = " (call it to get the stream)" if callable(stream) else ""
            raise TypeError(
                "SseResponse needs an async iterable of events,"
                f" got {type(stream).__name__}{hint}"
            )
        #: The async iterable of events this response streams.
        self.stream = stream
        #: The stream settings.
        self.config = config if config is not None else SseConfig()
        #: The HTTP status.
        self.status = status
        #: The response headers as ASGI ``(name, value)`` byte pairs
        #: (``connection: keep-alive`` is added per request on HTTP/1).
        self.headers = _build_headers(headers)
        self._function: Callable[[Sender], Awaitable[None]] | None = None
        self._called = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve the stream on one ASGI ``http`` connection."""
        if scope.get("type") != "http":
            raise TypeError(
                f"SseResponse serves 'http' scopes only, got {scope.get('type')!r}"
            )
        if self._called:
            raise RuntimeError("an SseResponse serves one request only")
        self._called = True
        await _Run(self, scope, receive, send).run()


def sse_channel(
    fn: Callable[[Sender], Awaitable[None]],
    config: SseConfig | None = None,
    *,
    status: int = 200,
    headers: Mapping[str, str]
    | Iterable[tuple[str | bytes, str | bytes]]
    | None = None,
) -> SseResponse:
    """Return a response that runs ``await fn(tx)`` in the response's nursery.

    ``fn`` sends with ``await tx.send(event)`` (see
    :class:`~trio_sse.Sender`). The stream ends when ``fn`` returns. An
    exception in ``fn`` is logged on the ``trio_sse`` logger with its
    traceback and ends this stream only. When the client disconnects, ``fn``
    is cancelled at once.
    """
    response = SseResponse(_no_stream(), config=config, status=status, headers=headers)
    response._function = fn
    return response


async def _no_stream() -> AsyncIterator[EventLike]:
    return
    yield  # pragma: no cover


class _Run:
    """State of one served response."""

    __slots__ = (
        "channel",
        "config",
        "direct",
        "done",
        "forget_shutdown",
        "iterator",
        "last_write",
        "nursery_scope",
        "pump_scope",
        "receive",
        "recheck",
        "response",
        "scope",
        "send",
        "send_started",
        "sending",
        "stalled",
        "started",
        "stopping",
        "stream",
        "stream_closed",
        "wait_scope",
        "waiting",
        "watch_scope",
    )

    def __init__(
        self, response: SseResponse, scope: Scope, receive: Receive, send: Send
    ) -> None:
        self.response = response
        self.config = response.config
        self.scope = scope
        self.receive = receive
        self.send = send
        self.stream = response.stream
        self.iterator: object = None
        self.stream_closed = False
        # The writer must stop: the stream was closed under it or the
        # client is gone.
        self.done = False
        # What the writer is doing: in a send, or waiting for the source.
        self.sending = False
        self.waiting = False
        self.stopping = False
        self.started = False
        self.nursery_scope: trio.CancelScope | None = None
        self.pump_scope = trio.CancelScope()
        # The writer's wait (it spans many events) and the watcher's timer.
        self.wait_scope: trio.CancelScope | None = None
        self.watch_scope: trio.CancelScope | None = None
        # When the current send started, when the last one ended, whether
        # the watcher waits for the end of this send, whether a write timed out.
        self.send_started = 0.0
        self.last_write = 0.0
        self.recheck = False
        self.stalled = False
        # Unregisters the shutdown callback when the response ends.
        self.forget_shutdown: Callable[[], None] | None = None
        # The writer reads channel-like streams itself (cancelling their
        # receive() loses nothing); anything else goes through a pump task.
        self.direct = response._function is None and _is_channel(self.stream)
        # The pump's channel to the writer, unless the writer reads directly.
        self.channel: (
            tuple[trio.MemorySendChannel[bytes], trio.MemoryReceiveChannel[bytes]]
            | None
        ) = None if self.direct else trio.open_memory_channel[bytes](_PUMP_BUFFER)

    def _start_message(self) -> Message:
        headers = list(self.response.headers)
        if self.scope.get("http_version", "1.1") in ("1.0", "1.1") and all(
            name != b"connection" for name, _ in headers
        ):
            headers.append((b"connection", b"keep-alive"))
        return {
            "type": "http.response.start",
            "status": self.response.status,
            "headers": headers,
        }

    async def run(self) -> None:
        config = self.config
        try:
            async with trio.open_nursery() as nursery:
                self.nursery_scope = nursery.cancel_scope
                self.last_write = trio.current_time()
                nursery.start_soon(self._watch)
                shutdown = self.scope.get("trio_sse.shutdown")
                if isinstance(shutdown, ShutdownSignal):
                    # A callback, not a task: one waiting task fewer per stream.
                    self.forget_shutdown = shutdown.add_callback(self._on_shutdown)
                elif shutdown is not None:
                    nursery.start_soon(self._watch_shutdown, shutdown)
                source: _Source
                if self.channel is None:
                    source = self.stream  # type: ignore[assignment]
                else:
                    tx, source = self.channel
                    nursery.start_soon(self._pump, tx)
                self.started = True
                if await self._send_message(self._start_message()):
                    await self._write(source)
                nursery.cancel_scope.cancel()
            if self.stalled:
                logger.info(
                    "SSE client did not read for %s s; response ended",
                    config.write_timeout,
                )
        finally:
            if self.forget_shutdown is not None:
                self.forget_shutdown()
            if self.channel is not None:
                for end in self.channel:
                    end.close()
            try:
                await self._close_stream()
            finally:
                if self.started:
                    await self._finish()

    async def _send_message(self, message: Message) -> bool:
        """Send one message; return ``False`` if the client is gone.

        :meth:`_watch` cuts the response off if this takes longer than the
        write timeout. (The writer's loop does the same inline.)
        """
        self.send_started = trio.current_time()
        self.sending = True
        try:
            await self.send(message)
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            logger.debug("SSE client gone: %r", exc)
            self.done = True
            return False
        finally:
            self.sending = False
        self.last_write = trio.current_time()
        if self.recheck:
            self.recheck = False
            if self.watch_scope is not None:
                self.watch_scope.cancel()
        return not self.done

    async def _write(self, source: _Source) -> None:
        """The writer loop: coalesce ready items, keep the connection alive.

        The writer waits for the source inside a cancel scope that spans
        many events; it is cancelled only while the writer waits, by
        :meth:`_watch` when a keep-alive is due and by
        :meth:`_watch_shutdown`. No cancel scope is made and no deadline
        moves per event: a send costs two clock reads and a few stores.
        """
        config = self.config
        limit = config.coalesce_bytes
        keep_alive_bytes = comment()
        encode = self.direct
        receive_nowait = source.receive_nowait
        receive = source.receive
        # A broadcast response's view takes its ready events in one call.
        drain = getattr(source, "drain_encoded", None) if encode else None
        send = self.send
        current_time = trio.current_time
        WouldBlock = trio.WouldBlock
        EndOfChannel = trio.EndOfChannel
        CancelScope = trio.CancelScope
        opening = (
            comment() if config.retry is None else Event(retry=config.retry).encode()
        )
        parts = [opening]
        size = len(opening)
        ended = False
        while True:
            with CancelScope() as wait_scope:
                self.wait_scope = wait_scope
                while True:
                    if ended:
                        pass
                    elif drain is not None:
                        try:
                            size, ended = drain(parts, size, limit)
                        except Exception:
                            _log_stream_error(self.stream)
                            ended = True
                    else:
                        try:
                            while size < limit:
                                item = receive_nowait()
                                if encode:
                                    item = _encode(item)
                                parts.append(item)
                                size += len(item)
                        except WouldBlock:
                            pass
                        except EndOfChannel:
                            ended = True
                        except Exception:
                            _log_stream_error(self.stream)
                            ended = True
                    if wait_scope.cancel_called:
                        # Cancelled for a keep-alive or shutdown: never
                        # send inside a cancelled scope.
                        break
                    if self.stopping:
                        self.wait_scope = None
                        if config.shutdown_retry is not None:
                            parts.append(Event(retry=config.shutdown_retry).encode())
                        if parts:
                            await self._send_message(
                                {
                                    "type": "http.response.body",
                                    "body": b"".join(parts),
                                    "more_body": True,
                                }
                            )
                        return
                    if parts:
                        body = parts[0] if len(parts) == 1 else b"".join(parts)
                        parts = []
                        size = 0
                        self.send_started = current_time()
                        self.sending = True
                        try:
                            await send(
                                {
                                    "type": "http.response.body",
                                    "body": body,
                                    "more_body": True,
                                }
                            )
                        except (
                            OSError,
                            trio.BrokenResourceError,
                            trio.ClosedResourceError,
                        ) as exc:
                            logger.debug("SSE client gone: %r", exc)
                            self.done = True
                        finally:
                            self.sending = False
                        if self.done:
                            return
                        self.last_write = current_time()
                        if self.recheck:
                            # The watcher slept through this send: it now
                            # counts the keep-alive from its end.
                            self.recheck = False
                            if self.watch_scope is not None:
                                self.watch_scope.cancel()
                        continue
                    if ended:
                        return
                    self.waiting = True
                    try:
                        item = await receive()
                    except EndOfChannel:
                        ended = True
                    except Exception:
                        _log_stream_error(self.stream)
                        ended = True
                    else:
                        try:
                            if encode:
                                item = _encode(item)
                        except TypeError:
                            _log_stream_error(self.stream)
                            ended = True
                        else:
                            parts.append(item)
                            size = len(item)
                    finally:
                        self.waiting = False
            self.wait_scope = None
            if not parts and not self.stopping:
                # The wait was cancelled for a keep-alive.
                parts.append(keep_alive_bytes)
                size = len(keep_alive_bytes)

    def _check_timers(self, now: float) -> float | None:
        """Act on due timers; return when to check again (``None``: stalled)."""
        config = self.config
        keep_alive = config.keep_alive or None
        limit = config.write_timeout
        if self.sending:
            # A keep-alive is counted from the end of this send.
            self.recheck = keep_alive is not None
            if limit is None:
                return math.inf
            due = self.send_started + limit
            return None if now >= due else due
        check_at = math.inf if limit is None else now + limit
        if keep_alive is not None:
            due = self.last_write + keep_alive
            if now >= due:
                if self.waiting and self.wait_scope is not None:
                    self.wait_scope.cancel()
                due = now + keep_alive
            check_at = min(check_at, due)
        return check_at

    async def _watch(self) -> None:
        """Watch for the disconnect; time keep-alives and the write timeout.

        One task: it waits for ``receive()`` (which only Hypercorn's
        ``http.disconnect`` ends) under a deadline that moves at most once
        per keep-alive period or write timeout, never per event. The write
        timeout is checked here, not by a cancel scope around the send:
        servers such as Hypercorn's trio worker write inside a shielded
        scope, which would hold off the cancellation until the stuck write
        returns. This task still closes the stream on time.
        """
        current_time = trio.current_time
        try:
            while True:
                check_at = self._check_timers(current_time())
                if check_at is None:
                    self.stalled = True
                    break
                with trio.move_on_at(check_at) as timer:
                    self.watch_scope = timer
                    try:
                        message = await self.receive()
                    except Exception as exc:
                        logger.debug("SSE receive() failed, client gone: %r", exc)
                        break
                    if message.get("type") == "http.disconnect":
                        break
                self.watch_scope = None
            self.watch_scope = None
            self.done = True
            if self.nursery_scope is not None:
                self.nursery_scope.cancel()
        finally:
            # A write stuck in the server's shielded socket write: close the
            # subscription now rather than when that write returns (a pump
            # task closes its own stream on cancellation).
            if self.direct and self.sending:
                self.done = True
                await self._close_stream()

    async def _pump(self, tx: trio.MemorySendChannel[bytes]) -> None:
        """Read the user's stream (or run the channel function) into ``tx``."""
        try:
            with self.pump_scope:
                try:
                    function = self.response._function
                    if function is not None:
                        await function(Sender(tx))
                    else:
                        # The iterator checkpoints (or is about to block) at
                        # each step already: a queue with room takes the item
                        # without a second checkpoint.
                        send, send_nowait = tx.send, tx.send_nowait
                        iterator = self.iterator = aiter(self.stream)
                        async for item in iterator:
                            data = _encode(item)
                            try:
                                send_nowait(data)
                            except trio.WouldBlock:
                                await send(data)
                except Exception:
                    _log_stream_error(function if function is not None else self.stream)
                finally:
                    await self._close_stream()
        finally:
            tx.close()

    async def _watch_shutdown(self, shutdown: trio.Event) -> None:
        """End the stream cleanly when a plain :class:`trio.Event` is set."""
        await shutdown.wait()
        self._on_shutdown()

    def _on_shutdown(self) -> None:
        """End the stream cleanly: the server begins to shut down."""
        self.stopping = True
        self.pump_scope.cancel()
        if self.waiting and self.wait_scope is not None:
            self.wait_scope.cancel()

    async def _close_stream(self) -> None:
        """Close the user's stream (and its iterator) once, with ``aclose()``."""
        if self.stream_closed:
            return
        self.stream_closed = True
        targets = [self.iterator]
        if self.stream is not self.iterator:
            targets.append(self.stream)
        await _aclose_all(targets)

    async def _finish(self) -> None:
        """Send the final empty body message, shielded and briefly."""
        with trio.CancelScope(shield=True) as scope:
            scope.deadline = trio.current_time() + _FINAL_SEND_TIMEOUT
            try:
                await self.send(
                    {"type": "http.response.body", "body": b"", "more_body": False}
                )
            except Exception as exc:
                logger.debug("SSE final send failed, client gone: %r", exc)


async def _aclose_all(targets: list[object]) -> None:
    if not targets:
        return
    target, rest = targets[0], targets[1:]
    try:
        aclose = getattr(target, "aclose", None)
        if aclose is not None:
            try:
                await aclose()
            except Exception:
                logger.exception("closing SSE stream %r failed", target)
    finally:
        await _aclose_all(rest)


def _valid_id(value: str, source: str) -> str | None:
    if not value:
        return None
    if (
        "\r" in value
        or "\n" in value
        or "\0" in value
        or len(value.encode("utf-8", "surrogatepass")) > _MAX_ID_BYTES
    ):
        logger.debug("ignoring malformed last event id from %s: %r", source, value)
        return None
    return value


def _from_scope(scope: Mapping[str, Any]) -> str | None:
    for name, raw in scope.get("headers") or ():
        if bytes(name).lower() == b"last-event-id":
            try:
                value = bytes(raw).decode("utf-8")
            except UnicodeDecodeError:
                logger.debug("ignoring non-UTF-8 Last-Event-ID header: %r", raw)
                break
            found = _valid_id(value, "header")
            if found is not None:
                return found
            break
    query = scope.get("query_string") or b""
    if isinstance(query, (bytes, bytearray)):
        query = bytes(query).decode("latin-1")
    try:
        pairs = urllib.parse.parse_qsl(
            query, keep_blank_values=True, encoding="utf-8", errors="strict"
        )
    except (UnicodeDecodeError, ValueError):
        logger.debug("ignoring undecodable query string: %r", query)
        return None
    for name, value in pairs:
        if name == "lastEventId":
            return _valid_id(value, "query")
    return None


def last_event_id(scope_or_request: object) -> str | None:
    """Return the client's last event id, or ``None``.

    Accepts an ASGI scope, or a request object (Starlette, Quart: anything
    with a ``.scope``, or with a ``.headers`` mapping and ``.query_params``
    or ``.args``). The ``Last-Event-ID`` header comes first, then a
    ``lastEventId`` query parameter (for clients that cannot set headers).
    Empty values, values over 256 bytes and values containing CR, LF or NUL
    are ignored (logged at debug level).
    """
    obj: Any = scope_or_request
    if isinstance(obj, Mapping):
        return _from_scope(obj)
    scope = getattr(obj, "scope", None)
    if isinstance(scope, Mapping):
        return _from_scope(scope)
    headers = getattr(obj, "headers", None)
    if headers is not None:
        value = _text(headers.get("last-event-id"))
        if value is not None:
            found = _valid_id(value, "header")
            if found is not None:
                return found
    params = getattr(obj, "query_params", None)
    if params is None:
        params = getattr(obj, "args", None)
    if params is not None:
        value = _text(params.get("lastEventId"))
        if value is not None:
            return _valid_id(value, "query")
    return None


def _text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, (bytes, bytearray)):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            logger.debug("ignoring non-UTF-8 last event id: %r", value)
            return None
    return str(value)
