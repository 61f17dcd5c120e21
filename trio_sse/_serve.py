"""Run an ASGI application on Hypercorn's trio worker inside your nursery."""

from __future__ import annotations

import contextvars
import errno
import gc
import logging
import math
import os
import random
import signal
import socket
import ssl
from collections.abc import Awaitable, Callable, MutableMapping
from functools import partial
from typing import Any, Literal, cast

import h11
import hypercorn.config
import trio
from hypercorn.events import Closed, Event, RawData, Updated
from hypercorn.trio.lifespan import Lifespan
from hypercorn.trio.statsd import StatsdLogger
from hypercorn.trio.tcp_server import MAX_RECV, TCPServer
from hypercorn.trio.worker_context import EventWrapper, WorkerContext
from hypercorn.typing import AppWrapper, ConnectionState, LifespanState
from hypercorn.utils import repr_socket_addr, wrap_app

from ._asgi import BODY_WRITER_SCOPE_KEY
from ._config import SseConfig
from ._counters import COUNTERS_SCOPE_KEY, StreamCounters
from ._errors import ConfigError
from ._limits import STREAMS_SCOPE_KEY, StreamCount
from ._pacing import PACER_SCOPE_KEY, Pacer
from ._shutdown import SHUTDOWN_SCOPE_KEY, ShutdownSignal

__all__ = ["SHUTDOWN_SCOPE_KEY", "run", "serve"]

_Scope = MutableMapping[str, Any]
_Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
_Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
_App = Callable[[_Scope, _Receive, _Send], Awaitable[None]]

_logger = logging.getLogger("trio_sse")

# The kernel option is an unsigned int of milliseconds.
_MAX_USER_TIMEOUT_MS = 2**31 - 1


def _user_timeout_ms(write_timeout: float | None) -> int | None:
    """``TCP_USER_TIMEOUT`` for *write_timeout*, or ``None`` to leave it unset."""
    if write_timeout is None or write_timeout <= 0:
        return None
    return max(1, min(round(write_timeout * 1000), _MAX_USER_TIMEOUT_MS))


async def _listen(
    host: str, port: int, write_timeout: float | None, backlog: int
) -> socket.socket:
    """Open the listening socket that accepted connections inherit options from.

    ``TCP_USER_TIMEOUT`` makes the kernel abort a connection whose sent data
    stays unacknowledged (or whose peer keeps a zero window) for longer than
    *write_timeout*: a client that stops reading is dropped even though
    Hypercorn writes under a shielded cancel scope. Where the option does not
    exist (not Linux) the socket is opened without it.
    """
    infos = await trio.socket.getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    family, type_, proto, _canonname, address = infos[0]
    sock = socket.socket(family, type_, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        timeout_ms = _user_timeout_ms(write_timeout)
        user_timeout = getattr(socket, "TCP_USER_TIMEOUT", None)
        if timeout_ms is not None and user_timeout is not None:
            sock.setsockopt(socket.IPPROTO_TCP, user_timeout, timeout_ms)
        sock.bind(address)
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


class _ServeConfig(hypercorn.config.Config):
    """Hypercorn settings whose :meth:`create_sockets` hands over one open socket.

    ``create_sockets()`` is Hypercorn's extension point for sockets made
    elsewhere: the worker listens on what it returns instead of binding
    ``bind`` itself.
    """

    premade_socket: socket.socket | None = None
    #: See ``serve(body_timeout=...)``.
    body_timeout: float | None = None

    def create_sockets(self) -> hypercorn.config.Sockets:
        sock = self.premade_socket
        if sock is None:
            return super().create_sockets()
        if self.ssl_enabled:
            return hypercorn.config.Sockets([sock], [], [])
        return hypercorn.config.Sockets([], [sock], [])


def _hypercorn_config(
    base: hypercorn.config.Config | None, graceful_timeout: float | None
) -> _ServeConfig:
    """A private copy of *base* (never mutated), or quiet defaults."""
    config = _ServeConfig()
    if base is None:
        # A logger object, not "-": Hypercorn would otherwise replace the
        # handlers of the process-wide "hypercorn.error" logger.
        config.errorlog = logging.getLogger("hypercorn.error")
        config.accesslog = None
    else:
        vars(config).update(vars(base))
    if graceful_timeout is not None:
        config.graceful_timeout = graceful_timeout
    return config


class _WaitHookEvent(EventWrapper):
    """Hypercorn's trio event, calling ``on_wait()`` when a task starts waiting.

    Hypercorn's HTTP/1.1 protocol pauses by waiting on such an event (its
    ``can_read``); the hook is how a connection learns of it.
    """

    on_wait: Callable[[], None] | None = None

    async def wait(self) -> None:
        if self.on_wait is not None:
            self.on_wait()
        await super().wait()


class _WorkerContext(WorkerContext):
    """Hypercorn's worker context, whose events have a wait hook."""

    event_class = _WaitHookEvent


#: Bytes a connection reads ahead of Hypercorn's protocol, at most.
_READ_AHEAD = 2 * MAX_RECV


#: The connection whose request the current task serves (set per connection
#: task; Hypercorn's application tasks inherit it).
_connection: contextvars.ContextVar[_Connection] = contextvars.ContextVar(
    "trio_sse_connection"
)


class _ChunkedBody:
    """Writes an HTTP/1.1 response body's chunks straight to the connection.

    A stream's body is most of what an SSE server writes, one small chunk
    after another. Through ASGI each chunk passes Hypercorn's stream and
    protocol objects and h11's state machine before the socket; here it is
    framed as one chunk (``<hex length>\r\n<data>\r\n``) and handed to
    the kernel at once when nobody else is sending on the connection: the
    socket is non-blocking, and a small chunk almost always fits in its
    send buffer. What does not fit is sent under the connection's send
    lock, shielded, as Hypercorn's own send does. h11 frames the head and
    the end of the body as usual: a chunked body is just these bytes
    between them, and h11 does not count them.

    A write that the kernel takes whole is not a checkpoint, and says so
    (the stream driver then checkpoints after it). Used only while h11
    is sending the body of a response it frames as chunked (see
    :meth:`usable`); :class:`~trio_sse.SseResponse` falls back to the ASGI
    ``send`` otherwise.
    """

    __slots__ = ("_conn", "_h11", "_socket")

    def __init__(self, conn: _Connection, h11_connection: h11.Connection) -> None:
        self._conn = conn
        self._h11 = h11_connection
        stream: object = conn.stream  # Hypercorn types it as its TLS stream
        # The plain TCP socket, written with os.write() (a TLS stream, or a
        # platform without os.write() on sockets, takes the locked path).
        self._socket = (
            stream.socket
            if isinstance(stream, trio.SocketStream) and os.name == "posix"
            else None
        )

    def usable(self) -> bool:
        """Whether h11 is in the middle of sending this response's body."""
        return self._h11.our_state is h11.SEND_BODY

    async def write(self, data: bytes) -> bool:
        """Send *data* as one chunk; raise if the client is gone.

        Returns ``False`` when the kernel took it at once (no checkpoint),
        ``True`` when the rest was sent under the lock (a checkpoint).
        """
        frame = b"%x\r\n%b\r\n" % (len(data), data)
        conn = self._conn
        lock = conn.send_lock
        try:
            lock.acquire_nowait()  # most writes: no task switch for the lock
        except trio.WouldBlock:
            await lock.acquire()
        try:
            sock = self._socket
            sent = 0 if sock is None else self._send_now(sock, frame)
            if sent == len(frame):
                return False
            with trio.CancelScope(shield=True):
                await conn.stream.send_all(memoryview(frame)[sent:])
            return True
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            await conn.protocol.handle(Closed())  # as Hypercorn's send does
            raise
        finally:
            lock.release()

    @staticmethod
    def _send_now(sock: trio.socket.SocketType, frame: bytes) -> int:
        """Write what the socket takes without waiting; return how much."""
        fd = sock.fileno()
        if fd == -1 or sock.did_shutdown_SHUT_WR:
            raise trio.ClosedResourceError("the connection is closed")
        try:
            return os.write(fd, frame)
        except BlockingIOError:
            return 0
        except InterruptedError:
            return 0
        except OSError as exc:
            raise trio.BrokenResourceError(f"socket write failed: {exc}") from exc


def _chunked_body(scope: _Scope) -> _ChunkedBody | None:
    """The direct body writer for an HTTP/1.1 request served by :func:`serve`.

    h11 frames a response body as chunks when the request is HTTP/1.1 and
    not ``HEAD`` and the response has no ``Content-Length`` (what
    :class:`~trio_sse.SseResponse` sends); the transport also checks the
    status it answers with.
    """
    if scope.get("http_version") != "1.1" or scope.get("method") == "HEAD":
        return None
    conn = _connection.get(None)
    if conn is None:
        return None
    h11_connection = getattr(conn.protocol.protocol, "connection", None)
    if not isinstance(h11_connection, h11.Connection):
        return None  # HTTP/2, or a protocol upgrade
    return _ChunkedBody(conn, h11_connection)


class _Connection(TCPServer):
    """Hypercorn's connection handler, with a read loop that always sees EOF.

    Hypercorn's own loop hands each read to the protocol and waits until the
    protocol is done with it. Its HTTP/1.1 protocol pauses on bytes that
    follow a request (a pipelined request, a stray CRLF) until the response
    ends, so the loop stops reading and a client that closes is not noticed:
    an endless response never gets ``http.disconnect``. Here each read is
    handed to the protocol by a task of its own while the loop reads on (up
    to :data:`_READ_AHEAD` bytes ahead); when the client closes after a
    complete request, the protocol is told at once, paused or not.
    """

    _input_closed = False  # nothing more will be read
    _ahead: bytearray  # read, not yet handed to the protocol
    _body_deadline = math.inf
    _read_deadline = math.inf
    _read_scope: trio.CancelScope | None = None

    def _request_complete(self) -> bool:
        """Whether the client has sent its whole HTTP/1.1 request.

        What it sends from then on belongs to a later request, which the
        protocol does not read before the response ends.
        """
        connection = getattr(self.protocol.protocol, "connection", None)
        return isinstance(connection, h11.Connection) and (
            connection.their_state is h11.DONE
        )

    def _awaiting_body(self) -> bool:
        """Whether an HTTP/1.1 request's head came and its body is still due."""
        connection = getattr(self.protocol.protocol, "connection", None)
        return isinstance(connection, h11.Connection) and (
            connection.their_state is h11.SEND_BODY
        )

    def _set_body_deadline(self, deadline: float) -> None:
        self._body_deadline = deadline
        if self._read_scope is not None:
            self._read_scope.deadline = min(self._read_deadline, deadline)

    async def protocol_send(self, event: Event) -> None:
        if isinstance(event, Updated):
            if event.idle and self._input_closed:
                # The response ended and the client is gone: close, rather
                # than wait for a request that cannot come.
                event = Closed()
            elif not event.idle and self._awaiting_body():
                # A request head came: its body has body_timeout to arrive.
                timeout = cast(_ServeConfig, self.config).body_timeout
                if timeout is not None:
                    self._set_body_deadline(trio.current_time() + timeout)
        await super().protocol_send(event)

    async def _read_data(self) -> None:
        self._ahead = bytearray()
        while True:
            if self._ahead:
                if self._input_closed and self._request_complete():
                    break  # the client is gone; the rest is a request nobody awaits
                data = bytes(self._ahead)
                self._ahead.clear()
            elif self._input_closed:
                break
            else:
                received = await self._receive(idle=True)
                if not received:
                    self._input_closed = True
                    if received is not None and not self._request_complete():
                        # EOF, as Hypercorn hands it over (the protocol only
                        # pauses after a complete request).
                        await self.protocol.handle(RawData(b""))
                    break
                data = received
            # Hand the bytes to the protocol; read on while it holds them.
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._feed, data, nursery.cancel_scope)
                await self._read_ahead(nursery.cancel_scope)
        await self.protocol.handle(Closed())
        # Nothing more will be read: do not keep an idle connection open for
        # Hypercorn's keep-alive timeout.
        await self.idle_task.stop()

    async def _feed(self, data: bytes, done: trio.CancelScope) -> None:
        """Hand *data* to the protocol, then stop the reading ahead."""

        def paused() -> None:
            # The request is complete and bytes follow it: if the client has
            # closed meanwhile, nothing will wake the protocol again.
            if self._input_closed:
                done.cancel()

        can_read = getattr(self.protocol.protocol, "can_read", None)
        if isinstance(can_read, _WaitHookEvent):
            can_read.on_wait = paused
        try:
            await self.protocol.handle(RawData(data))
        except OSError:
            # As in Hypercorn's loop: a socket error ends the connection.
            self._input_closed = True
            self._ahead.clear()
        finally:
            if isinstance(can_read, _WaitHookEvent):
                # The hook and the scope it closes over live as long as the
                # connection otherwise (most of a stream's life).
                can_read.on_wait = None
        if self._body_deadline < math.inf and not self._awaiting_body():
            self._set_body_deadline(math.inf)  # the body is in
        done.cancel()

    async def _read_ahead(self, feeding: trio.CancelScope) -> None:
        """Read while the protocol digests what came before (cancelled when done).

        The protocol may hold on for long: on a body the application reads
        slowly, or paused on bytes after a complete request until the
        response ends. A close seen meanwhile after a complete request stops
        it at once; so do pipelined bytes piling up behind a response.
        """
        while not self._input_closed:
            if len(self._ahead) > _READ_AHEAD:
                if not self._request_complete():
                    await trio.sleep_forever()  # a body: wait for the application
                self._input_closed = True  # a flood of pipelined bytes
                feeding.cancel()
                return
            data = await self._receive()
            if data:
                self._ahead += data
                continue
            self._input_closed = True
            if data is None or self._request_complete():
                # Gone (or too slow), or a close the protocol would not read
                # before the response ends: stop feeding it.
                feeding.cancel()
            # Otherwise a close in the middle of a request: the protocol
            # gets what came before it first.
            return

    async def _receive(self, *, idle: bool = False) -> bytes | None:
        """Read once; ``b""`` at EOF, ``None`` if the client is gone or too slow.

        One cancel scope carries both deadlines: Hypercorn's ``read_timeout``
        for this read, and ``body_timeout`` for a request body under way.
        With ``idle`` (the protocol holds nothing, so no request head can
        arrive and start a body's deadline meanwhile) and no deadline, the
        read needs no scope: that is how a stream's connection waits.
        """
        read_timeout = self.config.read_timeout
        if idle and not read_timeout and self._body_deadline == math.inf:
            try:
                return bytes(await self.stream.receive_some(MAX_RECV))
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                return None
        read_deadline = (
            math.inf if not read_timeout else trio.current_time() + read_timeout
        )
        while True:
            self._read_deadline = read_deadline
            with trio.CancelScope(
                deadline=min(read_deadline, self._body_deadline)
            ) as scope:
                self._read_scope = scope
                try:
                    return bytes(await self.stream.receive_some(MAX_RECV))
                except (trio.ClosedResourceError, trio.BrokenResourceError):
                    return None
                finally:
                    self._read_scope = None
            if trio.current_time() >= read_deadline:
                return None  # read_timeout, as in Hypercorn's loop
            if self._awaiting_body():
                _logger.info(
                    "closing a connection: its request body took longer than"
                    " body_timeout"
                )
                return None
            self._set_body_deadline(math.inf)  # the body came in time


#: accept() errors that mean "out of file descriptors or memory, for now".
_CAPACITY_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
#: Seconds between accept() attempts at the limit (as trio.serve_listeners).
_ACCEPT_RETRY = 0.1
#: Seconds without a failed accept() after which the limit is over.
_LIMIT_OVER_AFTER = 5.0
#: A listener waking up this late (seconds) was held up by a busy event loop.
_LATE = 1.0


class _PatientListener(trio.abc.Listener[trio.abc.Stream]):
    """A listener that waits out a full file descriptor table, with one log line.

    At the limit, ``accept()`` fails until a connection closes; there is no
    event to wait for, so it retries every :data:`_ACCEPT_RETRY` seconds (as
    :func:`trio.serve_listeners` does, which would log a traceback each
    time). The first failure logs one error. A server at its limit
    alternates between failing and accepting (each closed connection makes
    room for one); so the limit is over, and one line more says so, only
    once :data:`_LIMIT_OVER_AFTER` seconds passed without a failure. Time
    in which the event loop was too busy to try (the listener woke up more
    than :data:`_LATE` seconds late) does not count.
    """

    def __init__(self, listener: trio.abc.Listener[Any]) -> None:
        self.listener = listener
        #: When the first failure of the current episode came (or ``None``).
        self._limit_since: float | None = None
        #: Since when no accept() failed (at the limit).
        self._quiet_since = -math.inf
        self._failures = 0

    async def accept(self) -> trio.abc.Stream:
        while True:
            over_at = math.inf
            if self._limit_since is not None:
                over_at = self._quiet_since + _LIMIT_OVER_AFTER
                now = trio.current_time()
                if now > over_at + _LATE:
                    # The loop was busy: no attempt was made in that time.
                    self._quiet_since = now
                    over_at = now + _LIMIT_OVER_AFTER
                elif now >= over_at:
                    _logger.warning(
                        "accepting connections again, after %.1f s at the limit"
                        " (%d accept attempts failed)",
                        self._quiet_since - self._limit_since,
                        self._failures,
                    )
                    self._limit_since = None
                    over_at = math.inf
            try:
                # At the limit, wake up when it is over, to say so.
                with trio.move_on_at(over_at):
                    stream: trio.abc.Stream = await self.listener.accept()
                    return stream
            except OSError as error:
                if error.errno not in _CAPACITY_ERRNOS:
                    raise
                self._quiet_since = trio.current_time()
                if self._limit_since is None:
                    self._limit_since = self._quiet_since
                    self._failures = 0
                    _logger.error(
                        "cannot accept connections: %s (%s); new clients wait"
                        " until open connections close",
                        errno.errorcode[error.errno],
                        os.strerror(error.errno),
                    )
                self._failures += 1
                await trio.sleep(_ACCEPT_RETRY)

    async def aclose(self) -> None:
        await self.listener.aclose()


class _Worker:
    """Hypercorn's trio worker loop, with connections serve() can reach.

    The same steps as ``hypercorn.trio.run.worker_serve`` (lifespan, then
    serving the sockets ``config.create_sockets()`` returns, then a graceful
    shutdown), with these differences: connections read with
    :class:`_Connection`; listeners wait out a full file descriptor table
    (:class:`_PatientListener`); an exception from one connection is logged
    rather than ending the server; and when the grace period ends every
    connection still open is closed, which also ends writes Hypercorn
    shields from cancellation (a client that stopped reading).
    """

    def __init__(
        self, app: AppWrapper, config: hypercorn.config.Config, stop: trio.Event
    ) -> None:
        self.app = app
        self.config = config
        self.stop = stop
        self.connections: set[_Connection] = set()

    async def run(
        self, task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED
    ) -> None:
        config = self.config
        config.set_statsd_logger_class(StatsdLogger)
        lifespan_state: LifespanState = {}
        lifespan = Lifespan(self.app, config, lifespan_state)
        max_requests = None
        if config.max_requests is not None:
            max_requests = config.max_requests + random.randint(
                0, config.max_requests_jitter
            )
        context = _WorkerContext(max_requests)
        async with trio.open_nursery() as lifespan_nursery:
            await lifespan_nursery.start(lifespan.handle_lifespan)
            await lifespan.wait_for_startup()
            # Each request sees what the lifespan startup put in its state.
            state = ConnectionState(lifespan_state.copy())
            handler = partial(self._handle, context, state)
            listeners, binds = await self._listeners()
            closing = trio.CancelScope()
            async with trio.open_nursery() as server_nursery:
                task_status.started(binds)
                async with trio.open_nursery() as accepting:
                    accepting.start_soon(
                        partial(
                            trio.serve_listeners,
                            handler,
                            listeners,
                            handler_nursery=server_nursery,
                        )
                    )
                    stopped = accepting.cancel_scope.cancel
                    accepting.start_soon(_call_after, self.stop.wait, stopped)
                    accepting.start_soon(_call_after, context.terminate.wait, stopped)
                await context.terminated.set()
                deadline = trio.current_time() + config.graceful_timeout
                server_nursery.cancel_scope.deadline = deadline
                lifespan_nursery.start_soon(self._close_all_at, deadline, closing)
            closing.cancel()
            await lifespan.wait_for_shutdown()
            lifespan_nursery.cancel_scope.cancel()

    async def _listeners(self) -> tuple[list[_PatientListener], list[str]]:
        """Listeners on the sockets of ``config.create_sockets()``, and their URLs."""
        config = self.config
        sockets = config.create_sockets()
        listeners: list[_PatientListener] = []
        binds: list[str] = []
        for secure, socks in (
            (True, sockets.secure_sockets),
            (False, sockets.insecure_sockets),
        ):
            for sock in socks:
                listener: trio.abc.Listener[Any] = trio.SocketListener(
                    trio.socket.from_stdlib_socket(sock)
                )
                if secure:
                    ssl_context = cast(ssl.SSLContext, config.create_ssl_context())
                    listener = trio.SSLListener(
                        listener, ssl_context, https_compatible=True
                    )
                listeners.append(_PatientListener(listener))
                scheme = "https" if secure else "http"
                url = f"{scheme}://{repr_socket_addr(sock.family, sock.getsockname())}"
                binds.append(url)
                await config.log.info(f"Running on {url}")
        return listeners, binds

    async def _handle(
        self, context: WorkerContext, state: ConnectionState, stream: trio.abc.Stream
    ) -> None:
        connection = _Connection(
            self.app, self.config, context, state, cast(Any, stream)
        )
        self.connections.add(connection)
        _connection.set(connection)  # this task's context: its requests see it
        try:
            await connection.run()
        except Exception:
            # One broken connection must not take the server down with it.
            _logger.exception("error in a connection handler")
        finally:
            self.connections.discard(connection)
            # Hypercorn's protocol holds the connection's bound method, a
            # reference cycle only the garbage collector would find: broken
            # here, a closed connection's objects are freed at once.
            vars(connection).pop("protocol", None)

    async def _close_all_at(self, deadline: float, scope: trio.CancelScope) -> None:
        """At *deadline* (or when cancelled), close every connection still open.

        Closing a trio socket wakes a task blocked sending on it with
        :exc:`trio.ClosedResourceError`, shielded or not.
        """
        with scope:
            try:
                await trio.sleep_until(deadline)
            finally:
                for connection in list(self.connections):
                    stream = getattr(
                        connection.stream, "transport_stream", connection.stream
                    )
                    cast(trio.SocketStream, stream).socket.close()


async def _call_after(
    wait: Callable[[], Awaitable[object]], then: Callable[[], object]
) -> None:
    """``await wait()``, then ``then()``."""
    await wait()
    then()


async def _lifespan(app: _App, scope: _Scope, receive: _Receive, send: _Send) -> None:
    """Run *app*'s lifespan, and finish the protocol for it if it returns early.

    Many small ASGI apps return at once from a scope they do not handle;
    Hypercorn's trio worker then fails at startup. Here an app that returns
    without answering gets a no-op lifespan instead.
    """
    received: set[str] = set()
    sent: set[str] = set()

    async def tracked_receive() -> MutableMapping[str, Any]:
        message = await receive()
        received.add(message["type"])
        return message

    async def tracked_send(message: MutableMapping[str, Any]) -> None:
        sent.add(message["type"])
        await send(message)

    await app(scope, tracked_receive, tracked_send)
    if sent & {"lifespan.startup.failed", "lifespan.shutdown.failed"}:
        return
    if "lifespan.startup.complete" not in sent:
        if "lifespan.startup" not in received:
            await receive()
        await send({"type": "lifespan.startup.complete"})
    if "lifespan.shutdown.complete" not in sent:
        if "lifespan.shutdown" not in received:
            await receive()
        await send({"type": "lifespan.shutdown.complete"})


def _wrap(
    app: _App,
    shutdown: ShutdownSignal,
    streams: StreamCount,
    pacer: Pacer,
    counters: StreamCounters | None = None,
) -> _App:
    """Wrap *app* so every http and websocket scope carries *shutdown*, the
    server's stream count and pacer, and *counters* (if any)."""

    # A plain function returning the application's awaitable: no frame of
    # its own stays on the stack of every open stream.
    def asgi(scope: _Scope, receive: _Receive, send: _Send) -> Awaitable[None]:
        if scope["type"] == "lifespan":
            return _lifespan(app, scope, receive, send)
        if scope["type"] in ("http", "websocket"):
            # Hypercorn made this scope for this request: extended in place
            # (as a server adds its keys), not copied, one dict fewer per
            # stream.
            scope[SHUTDOWN_SCOPE_KEY] = shutdown
            scope[STREAMS_SCOPE_KEY] = streams
            scope[PACER_SCOPE_KEY] = pacer
            if scope["type"] == "http":
                body = _chunked_body(scope)
                if body is not None:
                    scope[BODY_WRITER_SCOPE_KEY] = body
            if counters is not None:
                scope[COUNTERS_SCOPE_KEY] = counters
        return app(scope, receive, send)

    return asgi


async def serve(
    app: Any,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    config: SseConfig | None = None,
    hypercorn_config: hypercorn.config.Config | None = None,
    graceful_timeout: float | None = None,
    handle_signals: bool = False,
    backlog: int = 2048,
    body_timeout: float | None = 60.0,
    metrics: StreamCounters | None = None,
    gc_freeze: bool | Literal["always"] = False,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the ASGI application *app* with Hypercorn's trio worker.

    Runs until cancelled, inside the caller's nursery::

        async with trio.open_nursery() as nursery:
            urls = await nursery.start(trio_sse.serve, app, "127.0.0.1", 0)
            print(urls[0])  # "http://127.0.0.1:PORT"

    ``nursery.start`` returns the bound addresses as a list of URL strings;
    with ``port=0`` the kernel picks a free port and the URL says which.

    The listening socket is opened here with ``TCP_USER_TIMEOUT`` set to
    ``config.write_timeout`` (Linux), so the kernel aborts a connection to a
    client that stops reading; the application then receives
    ``http.disconnect``.

    Every ``http`` and ``websocket`` scope carries a
    :class:`~trio_sse.ShutdownSignal` under ``scope["trio_sse.shutdown"]``,
    one per call, set when shutdown begins:
    :class:`~trio_sse.SseResponse` ends its stream cleanly when it is set.

    Cancelling the caller's scope shuts down gracefully: the event is set,
    Hypercorn stops accepting, open connections get ``graceful_timeout``
    seconds (default: ``hypercorn_config.graceful_timeout``, 3 s) to finish,
    the lifespan shutdown runs, and whatever still runs when the timeout
    expires is cancelled; connections still open then are closed, which
    also ends writes stuck on clients that stopped reading. So the whole
    shutdown takes at most ``graceful_timeout``. Then the cancellation
    propagates.

    With ``handle_signals=True``, SIGTERM and SIGINT (what docker, systemd
    and Ctrl+C send) start the same graceful shutdown, after which
    :func:`serve` returns normally; a second signal cuts the grace period
    short. Signals can only be received in the main thread.
    :func:`trio_sse.run` is this, as a program's entry point.

    :param app: an ASGI 3 application; lifespan events reach it as usual.
    :param host: interface to listen on; ``""`` listens on all of them.
    :param port: TCP port; ``0`` picks a free one.
    :param config: the stream settings; only ``write_timeout`` is used here.
    :param hypercorn_config: further Hypercorn settings (TLS, HTTP/2, logs).
        It is copied, never modified; its ``bind`` is ignored in favour of
        *host* and *port*. Without it, the access log is off and errors go
        to the ``hypercorn.error`` logger.
    :param graceful_timeout: seconds between the start of shutdown and the
        cancellation of whatever still runs.
    :param handle_signals: shut down gracefully on SIGTERM and SIGINT.
    :param backlog: the listening socket's accept queue (the kernel caps it
        at ``net.core.somaxconn``); Hypercorn's ``backlog`` is ignored.
    :param body_timeout: seconds an HTTP/1.1 client has, from the end of its
        request head, to send the whole body; then the connection is closed
        (the application receives ``http.disconnect``). A body trickled one
        byte at a time cannot hold a connection longer. It never applies to
        a response, so streams are not affected. ``None`` turns it off.
    :param metrics: a :class:`trio_sse.metrics.Metrics` (or any
        :class:`~trio_sse.StreamCounters`) put in every ``http`` and
        ``websocket`` scope, so that the responses count their streams in
        it. Mount its ``app`` to expose it.
    :param gc_freeze: ``True``: once the application has started
        (lifespan startup done, socket listening), collect garbage and then
        call ``gc.freeze()``, so what exists then (modules, the
        application) is never scanned by the garbage collector again.
        ``"always"``: that, and after every full collection while serving,
        freeze what survived it, so that a full collection walks only the
        objects made since the one before: its pause no longer grows with
        the number of open streams. The price: an object frozen and later
        left in a reference cycle is never reclaimed (trio_sse's streams
        and connections leave none; see the deployment guide).
        Process-wide, so off by default (:func:`run` turns on ``True``).
    """
    if gc_freeze is not True and gc_freeze is not False and gc_freeze != "always":
        raise ConfigError(
            f"gc_freeze must be False, True or 'always', got {gc_freeze!r}",
            key="gc_freeze",
        )
    if metrics is not None and not isinstance(metrics, StreamCounters):
        raise TypeError(
            "metrics must be a trio_sse.metrics.Metrics (or a StreamCounters),"
            f" got {metrics!r}"
        )
    sse_config = config if config is not None else SseConfig()
    hc_config = _hypercorn_config(hypercorn_config, graceful_timeout)
    hc_config.backlog = backlog
    hc_config.body_timeout = body_timeout
    grace = float(hc_config.graceful_timeout)
    shutdown = ShutdownSignal()  # tells the application
    stop = trio.Event()  # tells Hypercorn (its shutdown_trigger)
    streams = StreamCount()
    asgi = _wrap(app, shutdown, streams, Pacer(), metrics)

    with await _listen(host, port, sse_config.write_timeout, backlog) as sock:
        # The worker listens on this very socket (through create_sockets());
        # the ``with`` block closes it whatever happens.
        hc_config.premade_socket = sock
        worker = _Worker(
            wrap_app(cast(Any, asgi), hc_config.wsgi_max_body_size, "asgi"),
            hc_config,
            stop,
        )
        run_scope = trio.CancelScope()

        async def run_worker(
            task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
        ) -> None:
            with run_scope:
                try:
                    await worker.run(task_status=task_status)
                finally:
                    streams.log_refusals()  # those not logged yet
            # The worker ended by itself (or its hard deadline passed).
            nursery.cancel_scope.cancel()

        async with trio.open_nursery() as nursery:
            requested = trio.Event()
            if handle_signals:
                await nursery.start(_shut_down_on_signals, requested, run_scope)
            binds: list[str] = await nursery.start(run_worker)
            if gc_freeze:
                _freeze_startup_objects()
            if gc_freeze == "always":
                gc.callbacks.append(_freeze_survivors)
            # From now on the worker only stops through the trigger below,
            # so that a cancelled caller still gets a graceful shutdown.
            run_scope.shield = True
            task_status.started(binds)
            try:
                await requested.wait()
            finally:
                shutdown.set()
                stop.set()
                run_scope.deadline = trio.current_time() + grace
                if gc_freeze == "always":
                    gc.callbacks.remove(_freeze_survivors)


def _freeze_startup_objects() -> None:
    """Move what survives a full collection out of the collector's way."""
    gc.collect()
    gc.freeze()
    _logger.debug("gc.freeze(): %d objects frozen", gc.get_freeze_count())


def _freeze_survivors(phase: str, info: dict[str, int]) -> None:
    """A ``gc.callbacks`` entry: freeze what a full collection left."""
    if phase == "stop" and info["generation"] == 2:
        gc.freeze()


async def _shut_down_on_signals(
    requested: trio.Event,
    hard_stop: trio.CancelScope,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Set *requested* on SIGTERM or SIGINT; cancel *hard_stop* on a second one."""
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        task_status.started()
        async for signum in signals:
            name = signal.Signals(signum).name
            if requested.is_set():
                _logger.warning("%s again: stopping now", name)
                hard_stop.cancel()
            else:
                _logger.info("%s: shutting down gracefully", name)
                requested.set()


def run(
    app: Any,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    config: SseConfig | None = None,
    hypercorn_config: hypercorn.config.Config | None = None,
    graceful_timeout: float | None = None,
    backlog: int = 2048,
    body_timeout: float | None = 60.0,
    metrics: StreamCounters | None = None,
    gc_freeze: bool | Literal["always"] = True,
) -> None:
    """Serve *app* until SIGTERM or SIGINT, then shut down gracefully and return.

    A program's entry point, for ``python app.py`` in a container or under
    systemd: ``trio.run`` of :func:`serve` with ``handle_signals=True`` and
    ``gc_freeze=True`` (see there for the parameters). Streams end cleanly
    (with their final ``retry:`` if configured), Hypercorn drains within
    ``graceful_timeout``, and the process can exit with status 0.
    """
    trio.run(
        partial(
            serve,
            app,
            host,
            port,
            config=config,
            hypercorn_config=hypercorn_config,
            graceful_timeout=graceful_timeout,
            handle_signals=True,
            backlog=backlog,
            body_timeout=body_timeout,
            metrics=metrics,
            gc_freeze=gc_freeze,
        )
    )
